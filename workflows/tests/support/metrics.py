"""Reading /metrics as a scraper does: Prometheus text through the official parser."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple], float]


def scrape(client) -> Samples:
    """Every sample of ``GET /metrics`` (the client must be allowed to read it)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    return parse(response.content.decode())


def parse(text: str) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the sample ``name{labels}`` grew between two scrapes (absent: 0)."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)
