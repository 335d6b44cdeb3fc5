"""The preview page answers each APPROVAL step with the approve/reject choice of its form
(the ``approvals`` option of ``workflow_preview``; approve by default, as the API)."""
from __future__ import annotations

import re

import pytest

from workflows.models import WorkflowExecution
from workflows.tests.factories import make_workflow

from .helpers import text

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def refund(user):
    """An approval, then a CONDITION on its answer: approved → "pay", rejected → skip to "decline"."""
    return make_workflow(user, name="Refund", steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Refund order 42?"}},
        {"name": "gate", "type": "CONDITION", "config": {"expression": "steps.review.output.approved",
                                                         "if_true": "continue", "if_false": "skip_to:decline"}},
        {"name": "pay", "type": "TRANSFORM", "config": {"template": "refund paid"}},
        {"name": "decline", "type": "TRANSFORM", "config": {"template": "declined"}},
    ])


CARD = re.compile(r'step-card-(\w+)" data-testid="step-card" data-step-name="([^"]+)"')


def _statuses(body: str) -> dict[str, str]:
    """Each step card's status, by step name."""
    return {name: status.upper() for status, name in CARD.findall(body)}


def test_the_form_offers_approve_or_reject_for_each_approval_step_approve_checked(page, refund, flow):
    body = text(page.get(f"/workflows/{refund.pk}/preview"))
    assert 'data-testid="preview-approvals"' in body and 'data-approval-step="review"' in body
    assert '<input type="radio" name="approval__review" value="approve" id="id_approval__review_0" checked>' in body
    assert '<input type="radio" name="approval__review" value="reject" id="id_approval__review_1">' in body
    assert 'data-testid="preview-approvals"' not in text(page.get(f"/workflows/{flow.pk}/preview")), \
        "no APPROVAL step, no choice"


def test_a_reject_answer_makes_the_condition_take_the_other_branch(page, refund):
    approved = text(page.post(f"/workflows/{refund.pk}/preview", {"mode": "form", "approval__review": "approve"},
                              **HTMX))
    rejected = text(page.post(f"/workflows/{refund.pk}/preview", {"mode": "form", "approval__review": "reject"},
                              **HTMX))
    assert _statuses(approved) == {"review": "COMPLETED", "gate": "COMPLETED", "pay": "COMPLETED",
                                   "decline": "COMPLETED"}
    assert "approved by default" not in approved, "an answer was given"
    assert _statuses(rejected) == {"review": "COMPLETED", "gate": "COMPLETED", "pay": "SKIPPED",
                                   "decline": "COMPLETED"}
    assert "&quot;approved&quot;: false" in rejected and "&quot;decided_by&quot;: &quot;preview&quot;" in rejected
    assert not WorkflowExecution.objects.exists()


def test_an_answer_left_out_approves_with_the_services_warning(page, refund):
    body = text(page.post(f"/workflows/{refund.pk}/preview", {"mode": "form"}, **HTMX))
    assert _statuses(body)["pay"] == "COMPLETED" and "approved by default" in body


def test_an_answer_that_is_neither_is_refused_beside_its_step(page, refund):
    body = text(page.post(f"/workflows/{refund.pk}/preview", {"mode": "form", "approval__review": "maybe"}, **HTMX))
    assert "Select a valid choice" in body and 'data-testid="step-card"' not in body
