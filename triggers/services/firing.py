"""``trigger_fire``: the one way every trigger type starts a run.

It records the invocation and starts the execution in one statement (the execution is
enqueued after commit by ``execution_start``), so an accepted firing is durable before
anyone is told it was accepted, and a firing that starts nothing is still on record
with the reason.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import IntegrityError
from django.db.models import Q

from promptpilot.common import metrics
from promptpilot.common.logs import log_context
from workflows.errors import InputValidationFailed, WorkflowInactive
from workflows.models import Workflow, WorkflowVariable
from workflows.services.executions import WorkflowGuard, execution_start

from ..errors import TriggerInputInvalid, TriggerRejected
from ..models import InvocationStatus, TriggerInvocation, WorkflowTrigger

logger = logging.getLogger(__name__)


def trigger_variable_names(*, workflow: Workflow) -> list[str]:
    """Names of the workflow's variables (the ones a payload may fill)."""
    return list(WorkflowVariable.objects.filter(workflow=workflow).order_by("id").values_list("name", flat=True))


def first_accepted_invocation(trigger: WorkflowTrigger, delivery_id: str) -> TriggerInvocation | None:
    return (
        TriggerInvocation.objects.select_related("execution")
        .filter(trigger=trigger, delivery_id=delivery_id)
        .first()
    )


# The event of each outcome (docs/OPERATIONS.md, "Logs"); an ACCEPTED firing is "trigger.fired".
_EVENTS = {
    InvocationStatus.ACCEPTED: ("trigger.fired", logging.INFO),
    InvocationStatus.DUPLICATE: ("trigger.duplicate", logging.INFO),
    InvocationStatus.REJECTED: ("trigger.rejected", logging.WARNING),
    InvocationStatus.INVALID_INPUT: ("trigger.rejected", logging.WARNING),
    InvocationStatus.SKIPPED: ("trigger.skipped", logging.INFO),
}


def invocation_observe(trigger: WorkflowTrigger, invocation: TriggerInvocation) -> None:
    """Count and log a recorded firing, once, whatever its outcome: the one place the
    ``promptpilot_trigger_invocations`` counter and the ``trigger.*`` events come from."""
    event, level = _EVENTS.get(invocation.status, ("trigger.recorded", logging.INFO))
    metrics.TRIGGER_INVOCATIONS.labels(trigger.type, invocation.status).inc()
    extra = {"trigger_id": str(trigger.pk), "trigger_type": trigger.type, "invocation_id": str(invocation.pk),
             "status": invocation.status}
    if invocation.execution_id:
        extra["execution_id"] = str(invocation.execution_id)
    logger.log(level, event, extra=extra)


def invocation_record(*, trigger: WorkflowTrigger, status: str, **fields: Any) -> TriggerInvocation:
    """Write a firing that started no run (DUPLICATE, REJECTED, INVALID_INPUT, SKIPPED),
    with ``fields`` (error, payload, request_meta...), and its event."""
    invocation = TriggerInvocation.objects.create(trigger=trigger, status=status, **fields)
    invocation_observe(trigger, invocation)
    return invocation


def record_duplicate(*, trigger: WorkflowTrigger, first: TriggerInvocation, verified: bool,
               request_meta: dict[str, Any] | None) -> TriggerInvocation:
    """Record the repeated delivery (without the delivery id, which the first one holds) and
    answer with the first invocation, marked ``was_duplicate``."""
    invocation_record(
        trigger=trigger, status=InvocationStatus.DUPLICATE, verified=verified, execution_id=first.execution_id,
        error=f"Delivery id {first.delivery_id!r} was already accepted by invocation {first.pk}.",
        request_meta={**(request_meta or {}), "delivery_id": first.delivery_id, "duplicate_of": str(first.pk)},
    )
    first.was_duplicate = True
    return first


# last_triggered_at is shown to people; writing it once a second at most keeps the
# deliveries of a busy trigger from queueing on its row lock.
LAST_TRIGGERED_RESOLUTION = timedelta(seconds=1)


def last_triggered_touch(trigger: WorkflowTrigger, now) -> None:
    """Set ``last_triggered_at`` unless a value less than a second old is already stored.
    The filter makes the UPDATE match (and lock) nothing once a recent value is committed."""
    if trigger.last_triggered_at is not None and trigger.last_triggered_at > now - LAST_TRIGGERED_RESOLUTION:
        return
    WorkflowTrigger.objects.filter(
        Q(last_triggered_at__isnull=True) | Q(last_triggered_at__lte=now - LAST_TRIGGERED_RESOLUTION), pk=trigger.pk,
    ).update(last_triggered_at=now)
    trigger.last_triggered_at = now


def trigger_start(
    *,
    trigger: WorkflowTrigger,
    inputs: dict[str, Any] | None,
    payload: Any,
    delivery_id: str | None,
    verified: bool,
    request_meta: dict[str, Any] | None,
    actor=None,
    metadata: dict[str, Any] | None = None,
    version_id: int | None = None,
    guard: WorkflowGuard | None = None,
) -> TriggerInvocation:
    """Write a firing's ACCEPTED invocation and its PENDING execution together (through
    ``execution_start``, which raises what it raises) and return the invocation. The one
    place that says what a fired execution and its invocation hold; ``trigger_fire`` adds
    what a refused or repeated firing records, the webhook receiver's fast path a ``guard``
    (triggers/services/webhook_fast_path.py)."""
    invocation = TriggerInvocation(
        trigger=trigger, status=InvocationStatus.ACCEPTED, verified=verified, delivery_id=delivery_id or None,
        payload=payload, request_meta=request_meta or {},
    )

    def with_invocation(execution):
        invocation.execution = execution
        return [invocation]

    with log_context(trigger_id=trigger.pk):  # execution.created names its trigger
        execution_start(
            workflow=trigger.workflow,
            inputs=inputs,
            trigger=trigger,
            trigger_type=trigger.type,
            started_by=actor,
            version_id=version_id,
            metadata={
                **(metadata or {}),
                "payload": payload,
                "trigger_id": str(trigger.pk),
                "trigger_name": trigger.name,
                "invocation_id": str(invocation.pk),
                "delivery_id": delivery_id or None,
            },
            along=with_invocation,
            guard=guard,
        )
    invocation_observe(trigger, invocation)
    return invocation


def trigger_fire(
    *,
    trigger: WorkflowTrigger,
    inputs: dict[str, Any] | None,
    payload: Any,
    delivery_id: str | None = None,
    verified: bool = True,
    actor=None,
    request_meta: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    version_id: int | None = None,
    touch_last_triggered: bool = True,
) -> TriggerInvocation:
    """Record a firing of ``trigger`` and start its workflow.

    Returns the ACCEPTED invocation (``invocation.execution`` is the new PENDING run,
    ``invocation.was_duplicate`` False). A ``delivery_id`` already accepted for this
    trigger starts nothing and returns the first invocation with ``was_duplicate``
    True, even when two deliveries race (the unique constraint decides).

    Raises TriggerInputInvalid (invocation recorded INVALID_INPUT) when the inputs do
    not fit the workflow's variables, TriggerRejected (recorded REJECTED) when the
    workflow is inactive.

    ``metadata`` adds keys to the execution's metadata (e.g. ``scheduled_for``); the
    trigger's own keys (``payload``, ``trigger_id``...) win over them. ``version_id``:
    the workflow's latest version when the caller read it with the trigger.
    ``touch_last_triggered=False``: the caller saves ``last_triggered_at`` itself (the
    schedule sweep writes it with the rest of a batch's state in one UPDATE).
    """
    try:
        # NOTE: no look-up of the delivery id first: the invocation is written in the same
        # statement as the execution, and the unique index on (trigger, delivery_id) turns a
        # repeat into an IntegrityError that rolls both back (a concurrent repeat waits on
        # the index until the first commits). Repeats are rare; every delivery saves a query.
        invocation = trigger_start(trigger=trigger, inputs=inputs, payload=payload, delivery_id=delivery_id,
                                   verified=verified, actor=actor, request_meta=request_meta, metadata=metadata,
                                   version_id=version_id)
    except IntegrityError:
        first = first_accepted_invocation(trigger, delivery_id) if delivery_id else None
        if first is None:
            raise
        return record_duplicate(trigger=trigger, first=first, verified=verified, request_meta=request_meta)
    except (InputValidationFailed, WorkflowInactive) as exc:
        # A repeat of an accepted delivery is answered as such, whatever its content.
        first = first_accepted_invocation(trigger, delivery_id) if delivery_id else None
        if first is not None:
            return record_duplicate(trigger=trigger, first=first, verified=verified, request_meta=request_meta)
        invalid = isinstance(exc, InputValidationFailed)
        rejected = invocation_record(
            trigger=trigger, status=InvocationStatus.INVALID_INPUT if invalid else InvocationStatus.REJECTED,
            verified=verified, payload=payload, error=exc.message,
            request_meta={**(request_meta or {}), "delivery_id": delivery_id or None},
        )
        if invalid:
            raise TriggerInputInvalid(exc.message, exc.extra, invocation=rejected) from None
        raise TriggerRejected(exc.message, exc.extra, invocation=rejected) from None
    if touch_last_triggered:
        last_triggered_touch(trigger, invocation.execution.created_at)
    invocation.was_duplicate = False
    return invocation
