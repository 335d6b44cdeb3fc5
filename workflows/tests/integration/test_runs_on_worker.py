"""Workflows executed through the API by a real Celery worker on PostgreSQL + Redis."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from workflows.models import WorkflowExecution
from workflows.tests.durability.helpers import calls_for, step_run, wait_finished, wait_for
from workflows.tests.factories import make_workflow, probe_step

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ECHO = {"provider": "echo", "model": "echo"}


def _execute(api, workflow, payload=None, **headers):
    response = api.post(f"/api/workflows/{workflow.pk}/execute", payload or {"input": {}}, format="json", **headers)
    assert response.status_code in (200, 202), response.content
    return response.json()


def test_prompt_condition_transform_workflow_completes_with_outputs_and_tokens(api, user, shared_worker):
    workflow = make_workflow(
        user,
        variables=[{"name": "topic", "type": "STRING", "required": True},
                   {"name": "audience", "type": "STRING", "required": False, "default": "engineers"}],
        steps=[
            {"name": "draft", "type": "PROMPT",
             "config": {"template": "Explain {{ input.topic }} to {{ input.audience }}", "model": ECHO}},
            {"name": "check", "type": "CONDITION",
             "config": {"expression": "'durable' in steps.draft.output", "if_true": "continue", "if_false": "stop"}},
            {"name": "final", "type": "TRANSFORM", "config": {"template": "[{{ steps.draft.output | upper }}]"}},
        ],
    )
    body = _execute(api, workflow, {"input": {"topic": "durable execution"}})
    assert body["status"] == "PENDING"

    finished = wait_finished(body["id"], timeout=30)
    detail = api.get(f"/api/executions/{finished.id}/").json()
    assert detail["status"] == "COMPLETED"
    assert detail["output"] == "[EXPLAIN DURABLE EXECUTION TO ENGINEERS]"
    assert [(s["name"], s["status"]) for s in detail["steps"]] == [
        ("draft", "COMPLETED"), ("check", "COMPLETED"), ("final", "COMPLETED")]
    assert detail["steps"][1]["output"] is True
    assert detail["aggregate_tokens"]["total"] > 0
    assert detail["started_at"] and detail["completed_at"]
    # Ops read `worker` as host:pid of the process that ran the step: one of the worker's
    # pool processes (promptpilot/common/worker_pool.py), not some other machine's.
    pool_pids = shared_worker.task_pids()
    for name in ("draft", "check", "final"):
        assert int(step_run(finished.id, name).worker.rsplit(":", 1)[1]) in pool_pids


def test_condition_stop_records_remaining_steps_skipped(api, user, shared_worker):
    workflow = make_workflow(
        user,
        steps=[
            {"name": "gate", "type": "CONDITION", "config": {"expression": "false", "if_false": "stop"}},
            {"name": "never", "type": "TRANSFORM", "config": {"template": "x"}},
        ],
    )
    finished = wait_finished(_execute(api, workflow)["id"], timeout=30)
    assert finished.status == "COMPLETED"
    assert step_run(finished.id, "never").status == "SKIPPED"


def test_failed_run_is_retried_from_the_failed_step_reusing_earlier_outputs(api, user, shared_worker, probe_log):
    tag = uuid.uuid4().hex[:8]
    workflow = make_workflow(
        user,
        variables=[{"name": "data", "type": "JSON", "required": True}],
        steps=[
            probe_step("fetch", f"fetch {tag}"),
            {"name": "parse", "type": "TRANSFORM",
             "config": {"template": "{{ input.data.value }}", "output_format": "json"}},
        ],
    )
    failed = wait_finished(_execute(api, workflow, {"input": {"data": {"value": "not json"}}})["id"], timeout=30)
    assert failed.status == "FAILED"
    assert failed.error["type"] == "InvalidOutput" and failed.error["step"] == "parse"

    retried = api.post(f"/api/executions/{failed.id}/retry", format="json")
    assert retried.status_code == 202, retried.content
    again = wait_finished(retried.json()["id"], timeout=30)
    assert again.trigger_type == "RETRY" and again.retry_of_id == failed.id
    assert step_run(again.id, "fetch").reused_from_id == step_run(failed.id, "fetch").id
    assert len(calls_for(probe_log, f"fetch {tag}")) == 1, "the provider is not called again for reused steps"


def test_cancel_stops_further_steps(api, user, shared_worker):
    workflow = make_workflow(user, steps=[probe_step("slow", "slow", delay_ms=2000),
                                          {"name": "after", "type": "TRANSFORM", "config": {"template": "x"}}])
    execution_id = _execute(api, workflow)["id"]
    wait_for(lambda: (s := step_run(execution_id, "slow")) and s.status == "RUNNING", 20, "the step to run")
    response = api.post(f"/api/executions/{execution_id}/cancel", format="json")
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    wait_for(lambda: "discarded" in " ".join(step_run(execution_id, "slow").warnings), 20, "late result discarded")
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.status == "CANCELLED"
    assert step_run(execution_id, "after") is None
    assert api.post(f"/api/executions/{execution_id}/cancel", format="json").status_code == 409


def test_run_over_workflow_timeout_fails_as_timeout(api, user, shared_worker):
    workflow = make_workflow(user, timeout_seconds=1,
                             steps=[probe_step("slow", "slow", delay_ms=2500),
                                    {"name": "after", "type": "TRANSFORM", "config": {"template": "x"}}])
    finished = wait_finished(_execute(api, workflow)["id"], timeout=30)
    assert finished.status == "FAILED"
    assert finished.error["type"] == "Timeout"
    assert step_run(finished.id, "after") is None


def test_max_concurrent_executions_holds_extra_runs_pending_in_arrival_order(api, user, shared_worker):
    workflow = make_workflow(user, max_concurrent_executions=1,
                             steps=[probe_step("slow", "{{ input.n }}", delay_ms=800)],
                             variables=[{"name": "n", "type": "NUMBER", "required": True}])
    ids = [_execute(api, workflow, {"input": {"n": n}})["id"] for n in range(3)]
    wait_for(lambda: WorkflowExecution.objects.filter(pk=ids[0], status="RUNNING").exists(), 20, "run 1 to start")
    assert WorkflowExecution.objects.get(pk=ids[2]).status == "PENDING"
    runs = [wait_finished(i, timeout=40) for i in ids]
    assert all(r.status == "COMPLETED" for r in runs)
    starts = [r.started_at for r in runs]
    assert starts == sorted(starts)
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.started_at >= earlier.completed_at, "never two runs at once"


def test_idempotency_key_returns_the_first_execution(api, user, shared_worker):
    workflow = make_workflow(user, steps=[{"name": "t", "type": "TRANSFORM", "config": {"template": "x"}}])
    first = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {}}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {}}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert WorkflowExecution.objects.filter(workflow=workflow).count() == 1
    # Let the run end before the test's tables are wiped under the worker's feet.
    assert wait_finished(first.json()["id"], timeout=30).status == "COMPLETED"


def test_transient_provider_errors_are_retried_with_backoff_and_counted(api, user, shared_worker, probe_log):
    tag = uuid.uuid4().hex[:8]
    step = probe_step("call", f"flaky {tag}", provider="flaky",
                      retry_config={"max_retries": 3, "backoff_base_seconds": 0.2, "jitter": False})
    step["config"]["model"]["fail_times"] = 2
    workflow = make_workflow(user, steps=[step])
    finished = wait_finished(_execute(api, workflow)["id"], timeout=30)
    assert finished.status == "COMPLETED", finished.error
    run = step_run(finished.id, "call")
    assert run.retry_count == 2 and run.attempt == 3
    assert len(calls_for(probe_log, f"flaky {tag}")) == 3
    assert sum("retrying in" in w for w in run.warnings) == 2


def test_retries_stop_at_max_retries_and_the_run_fails_with_the_provider_error(api, user, shared_worker, probe_log):
    tag = uuid.uuid4().hex[:8]
    step = probe_step("call", f"down {tag}", provider="flaky",
                      retry_config={"max_retries": 1, "backoff_base_seconds": 0.1, "jitter": False})
    step["config"]["model"]["fail_times"] = 5
    workflow = make_workflow(user, steps=[step])
    finished = wait_finished(_execute(api, workflow)["id"], timeout=30)
    assert finished.status == "FAILED"
    assert finished.error["type"] == "ProviderUnavailable"
    assert len(calls_for(probe_log, f"down {tag}")) == 2


def test_multi_model_race_on_a_real_worker_keeps_the_fast_answer_and_cancels_the_slow_one(api, user, shared_worker):
    from waffle import get_waffle_switch_model

    get_waffle_switch_model().objects.update_or_create(name="workflow.multiModel", defaults={"active": True})
    workflow = make_workflow(user, steps=[{
        "name": "race", "type": "PROMPT",
        "config": {"template": "hello {{ input.who }}", "mode": "race", "models": [
            {"provider": "echo", "model": "slow", "delay_ms": 3000},
            {"provider": "echo", "model": "fast", "delay_ms": 50},
        ]},
    }], variables=[{"name": "who", "type": "STRING", "required": True}])
    finished = wait_finished(_execute(api, workflow, {"input": {"who": "world"}})["id"], timeout=30)

    assert finished.status == "COMPLETED", finished.error
    assert finished.output == "hello world"
    run = step_run(finished.id, "race")
    by_model = {m["model"]: m for m in run.model_outputs}
    assert by_model["fast"]["status"] == "ok"
    assert by_model["slow"]["status"] == "error" and by_model["slow"]["error"]["type"] == "Cancelled"
    assert run.completed_at - run.started_at < timedelta(seconds=2.5), "the slow model was not waited for"
