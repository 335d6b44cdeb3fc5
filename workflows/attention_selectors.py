"""The one rule of "needs attention" (dead letters, issue 11): which runs and trigger
deliveries an operator should look at, and why. The admin filter, the /attention/ page,
the nav count and the admin index counts all read it from here.

A run needs attention when it FAILED and
  - its worker was lost too often (error type ``WorkerLost``: recovery exhausted),
  - it ran past its workflow's timeout (error type ``Timeout``), or
  - a step failed after using every retry its retry_config allowed (max_retries >= 1);
and nobody has dismissed it or retried it yet (a retry is a new run: the old one is
handled, and the new one comes back here if it fails the same way).
A trigger delivery needs attention when it was REJECTED or INVALID_INPUT and was not
dismissed.
"""
from __future__ import annotations

from django.db import models
from django.db.models import Case, Exists, F, IntegerField, OuterRef, QuerySet, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from triggers.models import InvocationStatus, TriggerInvocation

from .models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from .page_selectors import visible_to


class AttentionReason(models.TextChoices):
    WORKER_LOST = "WORKER_LOST", "Worker lost (recovery exhausted)"
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED", "Failed after all retries"
    TIMEOUT = "TIMEOUT", "Timed out"
    TRIGGER_REJECTED = "TRIGGER_REJECTED", "Rejected by a trigger"


EXECUTION_REASONS = (AttentionReason.WORKER_LOST, AttentionReason.RETRIES_EXHAUSTED, AttentionReason.TIMEOUT)
REJECTED_STATUSES = (InvocationStatus.REJECTED, InvocationStatus.INVALID_INPUT)


def _retries_exhausted() -> Exists:
    return Exists(
        WorkflowStepExecution.objects.filter(execution=OuterRef("pk"), status=StepExecutionStatus.FAILED,
                                             retry_count__gte=1)
        .annotate(max_retries=Cast(KT("retry_config__max_retries"), IntegerField()))
        .filter(retry_count__gte=F("max_retries"))
    )


def with_attention_reason(queryset: QuerySet[WorkflowExecution]) -> QuerySet[WorkflowExecution]:
    """``queryset`` annotated with ``attention_reason`` (None when the run needs none)."""
    return queryset.annotate(attention_reason=Case(
        When(status=ExecutionStatus.FAILED, error__type="WorkerLost", then=Value(AttentionReason.WORKER_LOST)),
        When(status=ExecutionStatus.FAILED, error__type="Timeout", then=Value(AttentionReason.TIMEOUT)),
        When(_retries_exhausted(), status=ExecutionStatus.FAILED, then=Value(AttentionReason.RETRIES_EXHAUSTED)),
        default=Value(None), output_field=models.CharField(),
    ))


def executions_needing_attention(queryset: QuerySet[WorkflowExecution] | None = None,
                                 *, reason: str | None = None) -> QuerySet[WorkflowExecution]:
    queryset = WorkflowExecution.objects.all() if queryset is None else queryset
    queryset = with_attention_reason(queryset.filter(status=ExecutionStatus.FAILED,
                                                     attention_dismissed_at__isnull=True))
    queryset = queryset.exclude(Exists(WorkflowExecution.objects.filter(retry_of=OuterRef("pk"))))
    if reason:
        return queryset.filter(attention_reason=reason)
    return queryset.filter(attention_reason__isnull=False)


def invocations_needing_attention(queryset: QuerySet[TriggerInvocation] | None = None) -> QuerySet[TriggerInvocation]:
    queryset = TriggerInvocation.objects.all() if queryset is None else queryset
    return queryset.filter(status__in=REJECTED_STATUSES, attention_dismissed_at__isnull=True).annotate(
        attention_reason=Value(AttentionReason.TRIGGER_REJECTED, output_field=models.CharField()))


def attention_executions_for(user) -> QuerySet[WorkflowExecution]:
    return executions_needing_attention(visible_to(user, WorkflowExecution.objects.all(), owner="workflow__owner"))


def attention_invocations_for(user) -> QuerySet[TriggerInvocation]:
    return invocations_needing_attention(
        visible_to(user, TriggerInvocation.objects.all(), owner="trigger__workflow__owner"))


def attention_count(user) -> int:
    """How many items ``user``'s /attention/ page lists, in one query (the nav shows it)."""
    runs = attention_executions_for(user).values("pk")
    deliveries = attention_invocations_for(user).values("pk")
    return runs.union(deliveries, all=True).count()


def attention_counts() -> dict[str, int]:
    """Every item needing attention, by reason (the admin index block: staff see all)."""
    counts = dict.fromkeys(AttentionReason.values, 0)
    for row in executions_needing_attention().order_by().values("attention_reason").annotate(n=models.Count("pk")):
        counts[row["attention_reason"]] = row["n"]
    counts[AttentionReason.TRIGGER_REJECTED] = invocations_needing_attention().count()
    return counts


def attention_page_items(user, *, limit: int = 200) -> list[dict]:
    """The page's rows, newest first: runs and rejected deliveries merged."""
    runs = (attention_executions_for(user).select_related("workflow", "workflow__owner")
            .defer("input", "output", "metadata", "warnings").order_by("-completed_at", "-created_at")[:limit])
    deliveries = (attention_invocations_for(user).select_related("trigger", "trigger__workflow",
                                                                  "trigger__workflow__owner")
                  .defer("payload").order_by("-received_at")[:limit])
    items = [{"kind": "execution", "object": run, "reason": AttentionReason(run.attention_reason),
              "at": run.completed_at or run.created_at, "workflow": run.workflow,
              "message": (run.error or {}).get("message", "")} for run in runs]
    items += [{"kind": "invocation", "object": inv, "reason": AttentionReason.TRIGGER_REJECTED,
               "at": inv.received_at, "workflow": inv.trigger.workflow,
               "message": inv.error or inv.verification_error or inv.get_status_display()} for inv in deliveries]
    items.sort(key=lambda item: item["at"], reverse=True)
    return items[:limit]
