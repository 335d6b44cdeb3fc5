"""Reads of the triggers domain, always scoped to the user who asks: the API's
(``trigger_list``, ``trigger_get``) to the owner, the pages' (``trigger_page_*``) by the
pages' rule (owners their own, staff everyone's: ``workflows.page_selectors.visible_to``).

Another user's trigger, a missing one and a malformed id all raise the same
TriggerNotFound, so an id never tells whether someone else's trigger exists.
"""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from promptpilot.common.ids import parse_uuid
from workflows.page_selectors import visible_to
from workflows.selectors import workflow_filter_id

from .errors import TriggerNotFound
from .models import TriggerInvocation, WorkflowTrigger

RECENT_INVOCATIONS = 10


def _listed(queryset: QuerySet[WorkflowTrigger], workflow: Any) -> QuerySet[WorkflowTrigger]:
    """Newest first; ``workflow`` (an id) narrows to one workflow."""
    queryset = queryset.select_related("workflow")
    if workflow not in (None, ""):
        queryset = queryset.filter(workflow_id=workflow_filter_id(workflow))
    return queryset.order_by("-created_at", "-id")


def _one(queryset: QuerySet[WorkflowTrigger], id: Any) -> WorkflowTrigger:
    pk = parse_uuid(id)
    trigger = queryset.select_related("workflow").filter(pk=pk).first() if pk is not None else None
    if trigger is None:
        raise TriggerNotFound(f"No trigger with id {id} among yours.", {"trigger": str(id)})
    return trigger


def trigger_list(user, *, workflow: Any = None) -> QuerySet[WorkflowTrigger]:
    """The user's own triggers (the API's list)."""
    return _listed(WorkflowTrigger.objects.filter(workflow__owner=user), workflow)


def trigger_get(user, id: Any) -> WorkflowTrigger:
    """One of the user's own triggers (the API's)."""
    return _one(WorkflowTrigger.objects.filter(workflow__owner=user), id)


def triggers_visible(user) -> QuerySet[WorkflowTrigger]:
    """Every trigger ``user`` may open on the pages: their own, or everyone's for staff."""
    return visible_to(user, WorkflowTrigger.objects.all(), owner="workflow__owner")


def trigger_page_list(user, *, workflow: Any = None) -> QuerySet[WorkflowTrigger]:
    """The trigger pages' list (with each workflow's owner, for staff)."""
    return _listed(triggers_visible(user), workflow).select_related("workflow__owner")


def trigger_page_get(user, id: Any) -> WorkflowTrigger:
    return _one(triggers_visible(user).select_related("workflow__owner"), id)


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
