"""Reads of the triggers domain, always scoped to the user who asks.

Another user's trigger, a missing one and a malformed id all raise the same
TriggerNotFound, so an id never tells whether someone else's trigger exists.
"""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from promptpilot.common.ids import parse_uuid
from workflows.selectors import workflow_filter_id

from .errors import TriggerNotFound
from .models import TriggerInvocation, WorkflowTrigger

RECENT_INVOCATIONS = 10


def trigger_list(user, *, workflow: Any = None) -> QuerySet[WorkflowTrigger]:
    """The user's triggers, newest first; ``workflow`` (an id) narrows to one workflow."""
    queryset = WorkflowTrigger.objects.filter(workflow__owner=user).select_related("workflow")
    if workflow not in (None, ""):
        queryset = queryset.filter(workflow_id=workflow_filter_id(workflow))
    return queryset.order_by("-created_at", "-id")


def trigger_get(user, id: Any) -> WorkflowTrigger:
    pk = parse_uuid(id)
    trigger = (
        WorkflowTrigger.objects.select_related("workflow").filter(workflow__owner=user, pk=pk).first()
        if pk is not None else None
    )
    if trigger is None:
        raise TriggerNotFound(f"No trigger with id {id} among yours.", {"trigger": str(id)})
    return trigger


def trigger_get_for_key(id: Any) -> WorkflowTrigger | None:
    """An active API trigger by id, for API-key callers (who own nothing): None if there is none."""
    pk = parse_uuid(id)
    if pk is None:
        return None
    return WorkflowTrigger.objects.select_related("workflow").filter(pk=pk, type="API", is_active=True).first()


def invocation_list(trigger: WorkflowTrigger) -> QuerySet[TriggerInvocation]:
    return trigger.invocations.order_by("-received_at", "-id")


def invocation_recent(trigger: WorkflowTrigger, limit: int = RECENT_INVOCATIONS) -> list[TriggerInvocation]:
    return list(invocation_list(trigger).defer("payload")[:limit])
