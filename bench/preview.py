"""Preview benchmark: the preview API's latency against the engine run it wraps, in one run.

    DATABASE_URL=postgres://.../db python bench/preview.py [--n 300]

A 5-step PROMPT/echo workflow (the same templates as bench/engine.py) is run N times,
interleaved, three ways:

  (a) floor    ``run_workflow`` (engine functions only) on a definition built once,
               in this process, with the echo adapter;
  (b) service  ``workflow_preview`` on a loaded workflow: takes the latest version its row
               names (parsed once per process), validates the input, runs the steps,
               copies and prices every value (nothing is persisted);
  (b') + row   the same after loading the workflow's row as the API does
               (``workflow_get``: the owner check, one query), so no query is left out;
  (c) API      ``POST /api/workflows/{id}/preview`` through Django's test client
               (auth, parsing, serialization, middleware; no network socket).

Reported: p50/p95/min of each in ms and the ratios to (a). Goals (issue 10): the API's
p50 < 30 ms, and the preview's overhead, (b)/(a), <= 2x the direct run. See
bench/README.md, "Preview".
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

# A preview sends no Celery message: the broker is configured, never used (nor flushed).
common.configure_env(database_url="postgres://postgres@127.0.0.1:5432/bench", broker_url="redis://127.0.0.1:6379/5",
                     app_name="promptpilot-bench-preview")

import django  # noqa: E402

django.setup()

from bench.raw_chain import MODEL, STEPS, step_name, step_template  # noqa: E402

WORKFLOW_NAME = "bench: 5 echo steps (preview)"
BENCH_USER = "bench"
GOAL_P50_MS = 30.0
GOAL_RATIO = 2.0
INPUT = {"x": "durable execution of prompt workflows"}
p50, p95 = common.p50, common.p95


def _workflow():
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow
    from workflows.services.workflows import workflow_create

    common.ensure_database()
    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    Workflow.objects.filter(owner=user, name=WORKFLOW_NAME).delete()
    steps = [
        {"name": step_name(i), "order": i, "type": "PROMPT", "config": {"template": step_template(i), "model": MODEL}}
        for i in range(1, STEPS + 1)
    ]
    workflow = workflow_create(owner=user, data={
        "name": WORKFLOW_NAME, "variables": [{"name": "x", "type": "STRING"}], "steps": steps,
    })
    return user, workflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="runs per mode (after 20 warm-up runs each)")
    args = parser.parse_args()

    from django.conf import settings
    from django.test import Client

    from providers.registry import get_adapter
    from workflows.engine.runner import run_workflow
    from workflows.engine.types import WorkflowDefinition
    from workflows.selectors import workflow_get
    from workflows.services.definitions import workflow_definition_snapshot
    from workflows.services.preview import workflow_preview

    if "testserver" not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    user, workflow = _workflow()
    definition = WorkflowDefinition.from_dict(workflow_definition_snapshot(workflow=workflow))
    limits = {"max_output_chars": settings.PROMPTPILOT["TEMPLATE_MAX_OUTPUT_CHARS"],
              "max_loop_iterations": settings.PROMPTPILOT["TEMPLATE_MAX_LOOP_ITERATIONS"], "features": frozenset()}
    client = Client()
    client.force_login(user)
    url = f"/api/workflows/{workflow.pk}/preview"
    body = json.dumps({"input": INPUT})

    def floor() -> None:
        run = run_workflow(definition, INPUT, providers=get_adapter, limits=limits)
        assert run.status == "COMPLETED", run.error

    def service() -> None:
        result = workflow_preview(workflow=workflow, user=user, inputs=INPUT)
        assert result["status"] == "COMPLETED", result

    def service_and_row() -> None:
        loaded = workflow_get(user, workflow.pk, definition=False)
        result = workflow_preview(workflow=loaded, user=user, inputs=INPUT)
        assert result["status"] == "COMPLETED", result

    def api() -> None:
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 200 and response.json()["status"] == "COMPLETED", response.content[:300]

    modes = {"floor (engine only)": floor, "preview service": service, "service + its row": service_and_row,
             "preview API": api}
    timings: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(20):
        for run in modes.values():
            run()
    for _ in range(args.n):
        for name, run in modes.items():  # interleaved, so noise from other work hits all modes alike
            started = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - started) * 1000)

    print(f"# preview bench, n={args.n} per mode")
    for key, value in common.machine().items():
        print(f"#   {key}: {value}")
    floor_p50 = p50(timings["floor (engine only)"])
    floor_min = min(timings["floor (engine only)"])
    # min: the run least disturbed by other work on the machine (the work itself).
    print(f"{'mode':<22} {'p50 ms':>8} {'p95 ms':>8} {'min ms':>8} {'p50 / floor':>12} {'min / floor':>12}")
    for name, values in timings.items():
        print(f"{name:<22} {p50(values):8.2f} {p95(values):8.2f} {min(values):8.2f} {p50(values) / floor_p50:11.2f}x"
              f" {min(values) / floor_min:11.2f}x")
    api_p50 = p50(timings["preview API"])
    ratio = p50(timings["preview service"]) / floor_p50
    print(f"goal API p50 < {GOAL_P50_MS:g} ms: {'met' if api_p50 < GOAL_P50_MS else 'NOT met'} ({api_p50:.2f} ms)")
    # The overhead of previewing over running: the service against the engine run it wraps
    # (the API's HTTP handling, session and JSON rendering are the same for any endpoint).
    with_row = p50(timings["service + its row"]) / floor_p50
    print(f"goal preview overhead <= {GOAL_RATIO:g}x the direct run: {'met' if ratio <= GOAL_RATIO else 'NOT met'} "
          f"(service {ratio:.2f}x; with the workflow row's query {with_row:.2f}x)")


if __name__ == "__main__":
    main()
