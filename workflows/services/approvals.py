"""Deciding APPROVAL steps: by the run's owner (API, execution page) or with a signed link.

A decision is one ``transitions.step_resume``: the decision, the step's output and the
run's next step (or its end) commit together, so there is never a decided approval that
was not resumed. A second decision finds the step no longer WAITING and answers 409,
whoever raced whom (the step row's lock orders them).

Signed links (``approval_token``) let someone without an account decide: a
``django.core.signing`` token of the step execution and its attempt. It is good for one
decision (the resume bumps the attempt, and the step is no longer WAITING) and expires
with the step (its ``timeout_seconds``). The token travels in the link's fragment
(``/approvals/#<token>``), which browsers never send to a server, so it appears in no
access log; the page posts it in a request body. We never log it.
"""
from __future__ import annotations

import logging
from typing import Any

from django.core import signing
from django.utils import timezone

from ..engine.errors import InputValidationError
from ..engine.steps.approval import form_data
from ..engine.types import StepDefinition
from ..errors import ApprovalLinkExpired, ApprovalLinkInvalid, ApprovalNotWaiting, InputValidationFailed
from ..models import StepExecutionStatus, StepType, WorkflowExecution, WorkflowStepExecution
from .transitions import step_resume

logger = logging.getLogger(__name__)

TOKEN_SALT = "promptpilot.workflows.approval-link"
LINK_PATH = "/approvals/"


def waiting_approval(*, execution: WorkflowExecution, step: str | None = None) -> WorkflowStepExecution:
    """The run's APPROVAL step waiting for a decision (the one named ``step``, if given).
    Raises ApprovalNotWaiting (409) when there is none."""
    waiting = WorkflowStepExecution.objects.filter(
        execution_id=execution.pk, step_type=StepType.APPROVAL, status=StepExecutionStatus.WAITING)
    if step:
        waiting = waiting.filter(step_name=step)
    found = waiting.order_by("step_order").first()
    if found is None:
        execution.refresh_from_db(fields=["status"])
        named = f' named "{step}"' if step else ""
        raise ApprovalNotWaiting(
            f"No approval step{named} is waiting for a decision on this run (it is {execution.status}); "
            "it may have been decided already.", {"status": execution.status, "step": step})
    return found


def approval_decide(*, execution: WorkflowExecution, approved: bool, decided_by: str, step: str | None = None,
                    comment: str = "", data: Any = None) -> WorkflowStepExecution:
    """Approve or reject the run's waiting APPROVAL step and move the run on.

    ``data`` is checked against the step's ``form`` (InputValidationFailed, 400, naming
    every field); deciding a step that no longer waits is ApprovalNotWaiting (409)."""
    waiting = waiting_approval(execution=execution, step=step)
    return _decide(waiting.pk, approved=approved, decided_by=decided_by, comment=comment, data=data)


def _decide(step_execution_id, *, approved: bool, decided_by: str, comment: str, data: Any,
            attempt: int | None = None) -> WorkflowStepExecution:
    decision: dict[str, Any] = {"approved": bool(approved), "decided_by": decided_by, "comment": comment or "",
                                "data": {}, "decided_at": timezone.now().isoformat()}

    def check(row: WorkflowStepExecution, definition: StepDefinition) -> None:
        # Under the step's lock: the same row the resume writes.
        if row.step_type != StepType.APPROVAL or (attempt is not None and row.attempt != attempt):
            raise ApprovalNotWaiting("This approval was decided already.", {"status": row.status})
        try:
            decision["data"] = form_data(definition, data)
        except InputValidationError as exc:
            raise InputValidationFailed(
                "The form data is invalid: " + "; ".join(f"{k}: {v}" for k, v in exc.errors.items()),
                {"errors": {f"data.{k}": [v] for k, v in exc.errors.items()}},
            ) from None

    resumed = step_resume(step_execution_id=step_execution_id, decision=decision, check=check)
    if resumed is None:
        raise ApprovalNotWaiting("This approval was decided already (or its run was cancelled or timed out).",
                                 {"step_execution": str(step_execution_id)})
    logger.info("approval.decided", extra={"step_execution_id": str(step_execution_id), "approved": bool(approved)})
    return resumed


# --- signed links ----------------------------------------------------------------------


def approval_token(step_execution: WorkflowStepExecution) -> str:
    """The one-use token of a waiting approval: signed, not stored anywhere."""
    return signing.dumps({"s": str(step_execution.pk), "a": step_execution.attempt}, salt=TOKEN_SALT)


def approval_url(step_execution: WorkflowStepExecution, *, base_url: str) -> str:
    """The link to hand to whoever decides; ``base_url`` e.g. ``https://pilot.example.com``."""
    return f"{base_url.rstrip('/')}{LINK_PATH}#{approval_token(step_execution)}"


def approval_from_token(token: Any) -> WorkflowStepExecution:
    """The waiting approval a token opens. ApprovalLinkInvalid (404) for a token that does
    not verify; ApprovalNotWaiting (409) once used; ApprovalLinkExpired (410) past the
    step's timeout."""
    try:
        claims = signing.loads(str(token or ""), salt=TOKEN_SALT)
        step_execution_id, attempt = claims["s"], int(claims["a"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise ApprovalLinkInvalid("This approval link is not valid; ask the workflow's owner for a new one.") from None
    row = (WorkflowStepExecution.objects.select_related("execution__workflow")
           .filter(pk=step_execution_id, step_type=StepType.APPROVAL).first())
    if row is None:
        raise ApprovalLinkInvalid("This approval link is not valid; ask the workflow's owner for a new one.")
    if row.status != StepExecutionStatus.WAITING or row.attempt != attempt:
        raise ApprovalNotWaiting("This approval link was used already, or the run no longer waits for it.",
                                 {"status": row.status})
    if row.available_at is not None and timezone.now() >= row.available_at:
        raise ApprovalLinkExpired("This approval link has expired: the approval's time limit passed.",
                                  {"expired_at": row.available_at.isoformat()})
    return row


def approval_decide_by_token(*, token: Any, approved: bool, comment: str = "", data: Any = None,
                             name: str = "") -> WorkflowStepExecution:
    """Decide with a signed link (no account): one use, until the step expires."""
    row = approval_from_token(token)
    decided_by = f"link: {name.strip()[:100]}" if name and name.strip() else "link"
    return _decide(row.pk, approved=approved, decided_by=decided_by, comment=comment, data=data, attempt=row.attempt)
