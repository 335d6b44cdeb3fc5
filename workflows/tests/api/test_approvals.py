"""POST /api/executions/{id}/approve and /reject, and signed approval links (DESIGN §8).

Runs are driven in-process (no broker) up to their APPROVAL step, decided through the
API, then driven on: what the decision changes is what the run does next.
"""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from workflows.models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow
from workflows.tests.support.inprocess import capture_broker, drive

pytestmark = pytest.mark.django_db(transaction=True)

FORM = [{"name": "reason", "type": "STRING", "required": True}, {"name": "budget", "type": "NUMBER", "required": False}]


@pytest.fixture
def sent(monkeypatch, settings):
    return capture_broker(monkeypatch, settings)


def _approval_workflow(user, **config):
    return make_workflow(user, variables=[{"name": "title", "type": "STRING"}], steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Publish {{ input.title }}?", **config}},
        {"name": "gate", "type": "CONDITION",
         "config": {"expression": "steps.review.output.approved", "if_false": "skip_to:declined"}},
        {"name": "published", "type": "TRANSFORM", "config": {"template": "published by {{ steps.review.output."
                                                                          "decided_by }}"}},
        {"name": "stop_here", "type": "CONDITION", "config": {"expression": "false"}},  # if_false: stop
        {"name": "declined", "type": "TRANSFORM", "config": {"template": "declined: {{ steps.review.output.comment }}"}},
    ])


def _waiting_run(user, sent, **config) -> WorkflowExecution:
    run = execution_start(workflow=_approval_workflow(user, **config), inputs={"title": "Otters"}, started_by=user)
    drive(sent)
    run.refresh_from_db()
    assert run.status == ExecutionStatus.WAITING
    return run


def _review(run) -> WorkflowStepExecution:
    return WorkflowStepExecution.objects.get(execution=run, step_name="review")


def _output(run, step: str):
    return WorkflowStepExecution.objects.get(execution=run, step_name=step).output


def _finish(run, sent) -> WorkflowExecution:
    drive(sent)
    run.refresh_from_db()
    return run


def test_the_owner_approves_and_the_run_goes_on_with_the_decision(api, user, sent):
    run = _waiting_run(user, sent)
    response = api.post(f"/api/executions/{run.pk}/approve", {"comment": "lovely"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "RUNNING"
    review = next(s for s in body["steps"] if s["name"] == "review")
    assert review["status"] == "COMPLETED"
    assert review["output"]["approved"] is True and review["output"]["decided_by"] == "builder"
    assert review["output"]["comment"] == "lovely" and review["output"]["decided_at"]
    run = _finish(run, sent)
    assert run.status == ExecutionStatus.COMPLETED
    assert _output(run, "published") == "published by builder"
    assert WorkflowStepExecution.objects.get(execution=run, step_name="declined").status == "SKIPPED"


def test_a_rejection_takes_the_false_branch(api, user, sent):
    run = _waiting_run(user, sent)
    assert api.post(f"/api/executions/{run.pk}/reject/", {"comment": "not now"}, format="json").status_code == 200
    run = _finish(run, sent)
    assert run.status == ExecutionStatus.COMPLETED and run.output == "declined: not now"


def test_another_users_run_answers_404(other_api, user, sent):
    run = _waiting_run(user, sent)
    assert other_api.post(f"/api/executions/{run.pk}/approve", {}, format="json").status_code == 404
    assert other_api.post(f"/api/executions/{run.pk}/reject", {}, format="json").status_code == 404
    assert _review(run).status == StepExecutionStatus.WAITING


def test_deciding_twice_answers_409(api, user, sent):
    run = _waiting_run(user, sent)
    assert api.post(f"/api/executions/{run.pk}/approve", {}, format="json").status_code == 200
    for verb in ("approve", "reject"):
        response = api.post(f"/api/executions/{run.pk}/{verb}", {}, format="json")
        assert response.status_code == 409
        assert "decided already" in response.json()["message"]
    assert _review(run).output["approved"] is True


def test_form_data_is_validated_and_kept(api, user, sent):
    run = _waiting_run(user, sent, form=FORM)
    response = api.post(f"/api/executions/{run.pk}/approve", {"data": {"budget": "lots", "colour": "red"}},
                        format="json")
    assert response.status_code == 400
    assert set(response.json()["extra"]["errors"]) == {"data.reason", "data.budget", "data.colour"}
    assert _review(run).status == StepExecutionStatus.WAITING
    response = api.post(f"/api/executions/{run.pk}/approve", {"data": {"reason": "on brand", "budget": 10}},
                        format="json")
    assert response.status_code == 200
    assert _review(run).output["data"] == {"reason": "on brand", "budget": 10}


def test_a_step_name_that_does_not_wait_answers_409(api, user, sent):
    run = _waiting_run(user, sent)
    response = api.post(f"/api/executions/{run.pk}/approve", {"step": "published"}, format="json")
    assert response.status_code == 409 and '"published"' in response.json()["message"]


def test_concurrent_approve_and_reject_one_wins_the_other_gets_409(user, sent):
    assert connection.vendor == "postgresql"  # row locks under real concurrency
    run = _waiting_run(user, sent)
    barrier = threading.Barrier(2)
    codes: dict[str, int] = {}

    def decide(verb: str) -> None:
        client = APIClient()
        client.force_authenticate(user)
        barrier.wait()
        try:
            codes[verb] = client.post(f"/api/executions/{run.pk}/{verb}", {}, format="json").status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(verb,)) for verb in ("approve", "reject")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(codes.values()) == [200, 409]
    winner = next(verb for verb, code in codes.items() if code == 200)
    assert _review(run).output["approved"] is (winner == "approve")
    assert _review(run).attempt == 2  # resumed exactly once


def test_the_owner_sees_a_signed_link_while_the_step_waits(api, user, sent):
    run = _waiting_run(user, sent)
    review = next(s for s in api.get(f"/api/executions/{run.pk}/").json()["steps"] if s["name"] == "review")
    assert review["output"]["approval_url"].startswith("http://testserver/approvals/#")
    assert review["output"]["message"] == "Publish Otters?"
    api.post(f"/api/executions/{run.pk}/approve", {}, format="json")
    review = next(s for s in api.get(f"/api/executions/{run.pk}/").json()["steps"] if s["name"] == "review")
    assert "approval_url" not in review["output"]


def _token(api, run) -> str:
    review = next(s for s in api.get(f"/api/executions/{run.pk}/").json()["steps"] if s["name"] == "review")
    return review["output"]["approval_url"].split("#", 1)[1]


def test_a_signed_link_decides_once_without_an_account(api, user, sent):
    run = _waiting_run(user, sent, form=FORM)
    token = _token(api, run)
    anonymous = APIClient()
    opened = anonymous.post("/api/approvals/", {"token": token}, format="json")
    assert opened.status_code == 200
    assert opened.json() == {"workflow": "Test workflow", "step": "review", "message": "Publish Otters?",
                             "form": FORM, "expires_at": None, "status": "WAITING"}
    response = anonymous.post("/api/approvals/decide", {"token": token, "approved": False, "name": "Mo",
                                                         "comment": "too long", "data": {"reason": "length"}},
                              format="json")
    assert response.status_code == 200
    review = _review(run)
    assert review.output["approved"] is False and review.output["decided_by"] == "link: Mo"
    reused = anonymous.post("/api/approvals/decide", {"token": token, "approved": True, "data": {"reason": "x"}},
                            format="json")
    assert reused.status_code == 409
    assert anonymous.post("/api/approvals/", {"token": token}, format="json").status_code == 409
    assert _finish(run, sent).output == "declined: too long"


def test_a_tampered_link_answers_404(api, user, sent):
    run = _waiting_run(user, sent)
    token = _token(api, run)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for body in ({"token": tampered, "approved": True}, {"token": "nonsense", "approved": True}):
        response = APIClient().post("/api/approvals/decide", body, format="json")
        assert response.status_code == 404 and "not valid" in response.json()["message"]
    assert _review(run).status == StepExecutionStatus.WAITING


def test_a_link_expires_with_the_step(api, user, sent):
    run = _waiting_run(user, sent, timeout_seconds=3600)
    token = _token(api, run)
    WorkflowStepExecution.objects.filter(pk=_review(run).pk).update(available_at=timezone.now() - timedelta(seconds=1))
    response = APIClient().post("/api/approvals/decide", {"token": token, "approved": True}, format="json")
    assert response.status_code == 410 and "expired" in response.json()["message"]
    assert _review(run).status == StepExecutionStatus.WAITING  # the timer (on_timeout) decides, not the link


def test_on_timeout_rejects_by_default_when_nobody_decides(user, sent):
    run = _waiting_run(user, sent, timeout_seconds=30)
    timer = [m for m in sent if m[0] == "workflows.resume_wait"]
    assert len(timer) == 1 and 25 < timer[0][2] <= 30
    WorkflowStepExecution.objects.filter(pk=_review(run).pk).update(available_at=timezone.now())
    sent[:] = [(name, args, None) for name, args, _ in timer]  # the countdown elapses
    run = _finish(run, sent)
    assert run.status == ExecutionStatus.COMPLETED
    assert run.output == "declined: No decision within 30 s."
    assert _review(run).output["decided_by"] is None


def test_a_run_that_is_not_waiting_answers_409(api, user, sent):
    run = _waiting_run(user, sent)
    api.post(f"/api/executions/{run.pk}/cancel")
    response = api.post(f"/api/executions/{run.pk}/approve", {}, format="json")
    assert response.status_code == 409 and "CANCELLED" in response.json()["message"]
