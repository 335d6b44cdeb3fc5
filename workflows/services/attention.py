"""Dismissing items from the needs-attention list (``attention_selectors``). A dismissal
is durable (who and when, on the row) and is refused with a 409 when the item is not on
the list: already dismissed, retried, or never in need of attention. Retrying is the
existing ``executions.execution_retry``; a retried run leaves the list by itself."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from triggers.models import TriggerInvocation

from ..attention_selectors import executions_needing_attention, invocations_needing_attention
from ..errors import AttentionNotNeeded
from ..models import WorkflowExecution

__all__ = ["execution_dismiss", "invocation_dismiss"]


def _dismiss(queryset, pk, user, noun: str) -> None:
    with transaction.atomic():
        # Locked so two dismissals (or a dismissal and a retry) do not both pass the check.
        locked = queryset.model.objects.select_for_update().filter(pk=pk).values_list("pk", flat=True)
        if not list(locked) or not queryset.filter(pk=pk).exists():
            raise AttentionNotNeeded(
                f"This {noun} is not on the needs-attention list (already dismissed, retried, or it never "
                "needed attention); nothing to dismiss.", {"id": str(pk)})
        queryset.model.objects.filter(pk=pk).update(
            attention_dismissed_at=timezone.now(), attention_dismissed_by=user if user and user.pk else None)


def execution_dismiss(*, execution: WorkflowExecution, user=None) -> None:
    """Take a run off the needs-attention list for good. Raises AttentionNotNeeded (409)."""
    _dismiss(executions_needing_attention(), execution.pk, user, "run")
    execution.refresh_from_db(fields=["attention_dismissed_at", "attention_dismissed_by"])


def invocation_dismiss(*, invocation: TriggerInvocation, user=None) -> None:
    """Take a rejected trigger delivery off the needs-attention list. Raises AttentionNotNeeded (409)."""
    _dismiss(invocations_needing_attention(), invocation.pk, user, "delivery")
    invocation.refresh_from_db(fields=["attention_dismissed_at", "attention_dismissed_by"])
