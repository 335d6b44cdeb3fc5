"""README and docs/DATA_MODELS.md keep up with the code they describe."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.apps import apps

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
DATA_MODELS = (ROOT / "docs" / "DATA_MODELS.md").read_text()

ENV_READERS = re.compile(
    r"""(?:_(?:str|bool|int|float|list)\(|os\.environ\.get\(|os\.getenv\(|os\.environ\[)\s*["']([A-Z][A-Z0-9_]+)["']"""
)


def env_variables() -> set[str]:
    names = set(ENV_READERS.findall((ROOT / "promptpilot" / "settings" / "env.py").read_text()))
    assert "DATABASE_URL" in names  # the pattern still matches how env.py reads
    return names


def table_names(text: str) -> set[str]:
    return set(re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", text, re.M))


def test_readme_configuration_table_lists_every_environment_variable():
    documented = table_names(README)
    missing = env_variables() - documented
    assert not missing, f"add these to README.md's configuration table: {sorted(missing)}"
    assert {"TEST_DATABASE_URL", "TEST_REDIS_URL", "PROMPTPILOT_PORT"} <= documented


def test_readme_quick_start_is_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]


def test_readme_shows_the_curl_sequence():
    assert "/api/auth/token/" in README
    assert '{"input": {"topic": "durable execution"}}' in README
    assert "/api/executions/$EXECUTION/" in README and "COMPLETED" in README


OUR_MODELS = [m for m in apps.get_models() if m._meta.app_label in ("workflows", "triggers")]


@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda m: m.__name__)
def test_data_models_doc_describes_every_field(model):
    heading = re.search(rf"^## {model.__name__}\b.*$", DATA_MODELS, re.M)
    assert heading, f"docs/DATA_MODELS.md has no section for {model.__name__}"
    section = DATA_MODELS[heading.end():].split("\n## ", 1)[0]
    fields = {f.name for f in model._meta.concrete_fields}
    missing = fields - table_names(section)
    assert not missing, f"document {model.__name__} fields in docs/DATA_MODELS.md: {sorted(missing)}"
