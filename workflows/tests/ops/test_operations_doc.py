"""docs/OPERATIONS.md names only metrics /metrics serves, and its alert rules parse."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "OPERATIONS.md").read_text()
SUFFIXES = re.compile(r"_(bucket|count|sum|total)$")

pytestmark = pytest.mark.django_db


def served_families(client, admin_user) -> set[str]:
    client.force_login(admin_user)
    return {family.name for family in text_string_to_metric_families(client.get("/metrics").content.decode())}


def test_every_metric_the_doc_names_is_served(client, admin_user):
    named = {SUFFIXES.sub("", name) for name in re.findall(r"\bpromptpilot_[a-z_]+", DOC)}
    missing = named - served_families(client, admin_user)
    assert not missing, f"docs/OPERATIONS.md names metrics /metrics does not serve: {sorted(missing)}"


def test_the_example_alert_rules_are_valid_yaml_with_an_expression_each():
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOC, re.S)]
    [rules] = [block["groups"][0]["rules"] for block in blocks if "groups" in block]
    assert {"PromptPilotRunsStuckPending", "PromptPilotNoWorker", "PromptPilotFailureRate",
            "PromptPilotProviderSlow", "PromptPilotReaperRecovering"} <= {rule["alert"] for rule in rules}
    assert all(rule["expr"].strip() for rule in rules)


def test_every_test_the_failure_table_names_exists():
    named = re.findall(r"`([\w/]+\.py)::(\w+)`", DOC)
    assert len(named) >= 20, "the failure modes table names its tests as `path::test_name`"
    missing = [f"{path}::{name}" for path, name in named
               if not (ROOT / path).is_file()
               or not re.search(rf"^(?:async )?def {name}\(", (ROOT / path).read_text(), re.M)]
    assert not missing, f"docs/OPERATIONS.md names tests that do not exist: {missing}"
