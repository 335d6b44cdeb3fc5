"""SCHEDULED config: cron (croniter), time zone (zoneinfo), input, overlap and
pause_after_failures are checked when the trigger is saved, with a 400 naming the problem."""
from __future__ import annotations

import pytest

from triggers.models import WorkflowTrigger

pytestmark = pytest.mark.django_db


def create(api, workflow, **config):
    body = {"workflow": workflow.pk, "type": "SCHEDULED", "name": "Nightly",
            "config": {"cron": "0 9 * * *", "input": {"customer": "Ada"}, **config}}
    return api.post("/api/triggers/", body, format="json")


def refused(response, field: str) -> str:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_trigger_config"
    assert field in body["extra"]["errors"], body
    assert not WorkflowTrigger.objects.exists()
    return body["message"]


@pytest.mark.parametrize(
    ("cron", "needle"),
    [
        ("61 * * * *", "61 * * * *"),  # out of range
        ("0 24 * * *", "not a valid cron expression"),
        ("every day", "needs exactly 5"),
        ("* * * * * *", "needs exactly 5"),  # croniter would read seconds; we do not
        ("0 9 * * 1 2026", "needs exactly 5"),
        ("0 0 30 2 *", "never fires"),
        ("0 9 L * *", "not supported"),
        ("0 9 * * 5#2", "not supported"),
        ("H 9 * * *", "not supported"),
        ("@fortnightly", "not a known macro"),
        ("", "cron is required"),
    ],
)
def test_invalid_cron_is_a_400_naming_the_problem(api, workflow, cron, needle):
    assert needle in refused(create(api, workflow, cron=cron), "config.cron")


def test_missing_cron_is_a_400(api, workflow):
    response = api.post("/api/triggers/", {"workflow": workflow.pk, "type": "SCHEDULED", "name": "x",
                                           "config": {"timezone": "UTC"}}, format="json")
    assert "cron is required" in refused(response, "config.cron")


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "EST5EDT/oops", "../../etc/passwd", 5])
def test_unknown_time_zone_is_a_400(api, workflow, tz):
    message = refused(create(api, workflow, timezone=tz), "config.timezone")
    assert "time zone" in message or "timezone" in message


def test_input_is_validated_against_the_workflow_variables(api, workflow):
    response = create(api, workflow, input={"amount": "twelve"})
    assert response.status_code == 400
    errors = response.json()["extra"]["errors"]
    assert set(errors) == {"config.input.customer", "config.input.amount"}
    assert "input does not fit" in response.json()["message"]
    assert "not a variable" in refused(create(api, workflow, input={"customer": "Ada", "nope": 1}),
                                       "config.input.nope")


@pytest.mark.parametrize("overlap", ["queue", "", 1, "SKIP"])
def test_unknown_overlap_policy_is_a_400(api, workflow, overlap):
    assert "overlap must be one of skip, allow, buffer_one" in refused(create(api, workflow, overlap=overlap),
                                                                       "config.overlap")


@pytest.mark.parametrize("limit", [0, -1, "3", True, 2.5, 1001])
def test_pause_after_failures_must_be_a_small_positive_integer(api, workflow, limit):
    refused(create(api, workflow, pause_after_failures=limit), "config.pause_after_failures")


def test_unknown_config_key_is_a_400(api, workflow):
    response = create(api, workflow, every="day")
    assert response.status_code == 400 and "every" in response.json()["message"]


def test_valid_schedule_is_created_with_defaults_and_next_runs(api, workflow):
    response = create(api, workflow, cron="@daily", timezone="Europe/Paris")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["config"] == {"cron": "@daily", "timezone": "Europe/Paris", "input": {"customer": "Ada"},
                              "overlap": "skip", "pause_after_failures": None}
    assert body["next_run_at"] is not None and body["paused_at"] is None and body["paused_reason"] == ""
    detail = api.get(f"/api/triggers/{body['id']}/").json()
    runs = detail["next_runs"]
    assert len(runs) == 5 and runs[0]["utc"] == detail["next_run_at"]
    for run in runs:  # midnight in Paris, i.e. 22:00 or 23:00 UTC
        assert run["local"][11:19] == "00:00:00" and run["local"][19:] in ("+01:00", "+02:00")
        assert run["utc"].endswith("Z") and run["utc"][11:13] in ("22", "23")


def test_timezone_defaults_to_utc_and_other_types_have_no_next_runs(api, workflow, manual):
    body = api.post("/api/triggers/", {"workflow": workflow.pk, "type": "SCHEDULED", "name": "x",
                                       "config": {"cron": "*/5 * * * *", "input": {"customer": "Ada"}}},
                    format="json").json()
    assert body["config"]["timezone"] == "UTC"
    assert api.get(f"/api/triggers/{manual.pk}/").json()["next_runs"] is None
    assert api.get(f"/api/triggers/{manual.pk}/").json()["next_run_at"] is None
