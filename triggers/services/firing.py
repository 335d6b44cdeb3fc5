"""``trigger_fire``: the one way every trigger type starts a run.

It records the invocation and starts the execution in one transaction (the execution
is enqueued after commit by ``execution_start``), so an accepted firing is durable
before anyone is told it was accepted, and a firing that starts nothing is still on
record with the reason.
"""
from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from workflows.errors import InputValidationFailed, WorkflowInactive
from workflows.models import Workflow, WorkflowVariable
from workflows.services.executions import execution_start

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


def record_duplicate(*, trigger: WorkflowTrigger, first: TriggerInvocation, verified: bool,
               request_meta: dict[str, Any] | None) -> TriggerInvocation:
    """Record the repeated delivery (without the delivery id, which the first one holds) and
    answer with the first invocation, marked ``was_duplicate``."""
    TriggerInvocation.objects.create(
        trigger=trigger, status=InvocationStatus.DUPLICATE, verified=verified, execution_id=first.execution_id,
        error=f"Delivery id {first.delivery_id!r} was already accepted by invocation {first.pk}.",
        request_meta={**(request_meta or {}), "delivery_id": first.delivery_id, "duplicate_of": str(first.pk)},
    )
    first.was_duplicate = True
    logger.info("trigger.duplicate", extra={"trigger_id": str(trigger.pk), "invocation_id": str(first.pk)})
    return first


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
    trigger's own keys (``payload``, ``trigger_id``...) win over them.
    """
    if delivery_id:
        first = first_accepted_invocation(trigger, delivery_id)
        if first is not None:
            return record_duplicate(trigger=trigger, first=first, verified=verified, request_meta=request_meta)
    try:
        with transaction.atomic():
            # NOTE: the invocation is inserted first so that a concurrent delivery with the
            # same id waits on the unique index here, before any execution exists.
            invocation = TriggerInvocation.objects.create(
                trigger=trigger, status=InvocationStatus.ACCEPTED, verified=verified, delivery_id=delivery_id or None,
                payload=payload, request_meta=request_meta or {},
            )
            execution = execution_start(
                workflow=trigger.workflow,
                inputs=inputs,
                trigger=trigger,
                trigger_type=trigger.type,
                started_by=actor,
                metadata={
                    **(metadata or {}),
                    "payload": payload,
                    "trigger_id": str(trigger.pk),
                    "trigger_name": trigger.name,
                    "invocation_id": str(invocation.pk),
                    "delivery_id": delivery_id or None,
                },
            )
            invocation.execution = execution
            invocation.save(update_fields=["execution"])
            now = timezone.now()
            # Last on purpose: the trigger row lock is then held only until commit.
            WorkflowTrigger.objects.filter(pk=trigger.pk).update(last_triggered_at=now)
            trigger.last_triggered_at = now
    except IntegrityError:
        first = first_accepted_invocation(trigger, delivery_id) if delivery_id else None
        if first is None:
            raise
        return record_duplicate(trigger=trigger, first=first, verified=verified, request_meta=request_meta)
    except InputValidationFailed as exc:
        # The savepoint above rolled back; this row is written outside it, so it stays.
        rejected = TriggerInvocation.objects.create(
            trigger=trigger, status=InvocationStatus.INVALID_INPUT, verified=verified, payload=payload,
            error=exc.message, request_meta={**(request_meta or {}), "delivery_id": delivery_id or None},
        )
        logger.info("trigger.invalid_input", extra={"trigger_id": str(trigger.pk), "invocation_id": str(rejected.pk)})
        raise TriggerInputInvalid(exc.message, exc.extra, invocation=rejected) from None
    except WorkflowInactive as exc:
        rejected = TriggerInvocation.objects.create(
            trigger=trigger, status=InvocationStatus.REJECTED, verified=verified, payload=payload,
            error=exc.message, request_meta={**(request_meta or {}), "delivery_id": delivery_id or None},
        )
        raise TriggerRejected(exc.message, exc.extra, invocation=rejected) from None
    invocation.was_duplicate = False
    logger.info("trigger.fired", extra={"trigger_id": str(trigger.pk), "invocation_id": str(invocation.pk),
                                        "execution_id": str(execution.pk)})
    return invocation
