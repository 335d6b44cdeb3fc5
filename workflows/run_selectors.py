"""Reads of the execution and prompt pages (DESIGN §10): owners see their own objects,
staff see everyone's. The API's selectors (``selectors.py``) stay owner-only.

Another user's object, a missing one and a malformed id all raise the same NotFound:
an id never tells a user whether someone else's object exists.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from promptpilot.common.errors import NotFound
from promptpilot.common.ids import parse_int_id, parse_uuid

from .models import (
    ExecutionStatus,
    Prompt,
    StepExecutionStatus,
    StepType,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
)
from .page_selectors import visible_to, workflows_visible

# A MAP step's items: the API's reads, which the pages share.
from .selectors import item_counts, step_items, steps_of_runs  # noqa: F401

# Columns the list page never shows: big JSON blobs stay in the database.
_LIST_DEFERRED = ("input", "output", "metadata", "warnings", "version__definition")


# --- executions ----------------------------------------------------------------

def executions_visible(user) -> QuerySet[WorkflowExecution]:
    return visible_to(user, WorkflowExecution.objects.all(), owner="workflow__owner")


def approvals_awaiting(user) -> QuerySet[WorkflowStepExecution]:
    """APPROVAL steps waiting for a decision on the user's runs (everyone's, for staff), oldest first."""
    queryset = WorkflowStepExecution.objects.filter(status=StepExecutionStatus.WAITING, step_type=StepType.APPROVAL,
                                                    execution__status=ExecutionStatus.WAITING)
    if not user.is_staff:
        queryset = queryset.filter(execution__workflow__owner=user)
    return queryset.select_related("execution__workflow__owner").order_by("started_at", "id")


def workflows_for_filter(user) -> QuerySet[Workflow]:
    """The workflows the executions filter offers: the user's own (every one, for staff)."""
    return workflows_visible(user).select_related("owner").only("id", "name", "owner__username").order_by("name", "id")


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def execution_page_list(
    user, *, workflow: int | None = None, status: str = "", trigger_type: str = "",
    created_from: date | None = None, created_to: date | None = None,
) -> QuerySet[WorkflowExecution]:
    """The executions list, newest first. ``created_from`` / ``created_to`` are days,
    both included, in the current time zone."""
    queryset = executions_visible(user)
    if workflow:
        queryset = queryset.filter(workflow_id=workflow)
    if status:
        queryset = queryset.filter(status=status)
    if trigger_type:
        queryset = queryset.filter(trigger_type=trigger_type)
    if created_from:
        queryset = queryset.filter(created_at__gte=_day_start(created_from))
    if created_to:
        queryset = queryset.filter(created_at__lt=_day_start(created_to + timedelta(days=1)))
    return (
        queryset.select_related("workflow", "workflow__owner", "version")
        .defer(*_LIST_DEFERRED).order_by("-created_at", "-id")
    )


def execution_page_get(user, id: Any) -> WorkflowExecution:
    """One execution with its steps (in order), workflow, version and trigger."""
    pk = parse_uuid(id)
    execution = None
    if pk is not None:
        execution = (
            executions_visible(user).filter(pk=pk)
            .select_related("workflow", "workflow__owner", "version", "trigger", "trigger__workflow", "retry_of",
                            "started_by")
            .prefetch_related(
                Prefetch("step_executions", queryset=steps_of_runs()),
            )
            .first()
        )
    if execution is None:
        raise NotFound(f"No execution with id {id} among yours.", {"execution": str(id)})
    return execution


def execution_retries(execution: WorkflowExecution) -> list[WorkflowExecution]:
    """The runs that retried ``execution`` (its children), oldest first."""
    return list(execution.retries.only("id", "status", "created_at").order_by("created_at", "id"))


def execution_children(execution: WorkflowExecution) -> list[WorkflowExecution]:
    """The child runs its WORKFLOW steps started, oldest first."""
    return list(execution.children.select_related("workflow").only("id", "status", "created_at", "workflow__name")
                .order_by("created_at", "id"))


def execution_invocation(execution: WorkflowExecution):
    """The trigger invocation that started ``execution`` (the first one recorded), or None."""
    return (
        execution.invocations.select_related("trigger").defer("payload")
        .order_by("received_at", "id").first()
    )


# --- prompts -------------------------------------------------------------------

def prompts_visible(user) -> QuerySet[Prompt]:
    return visible_to(user, Prompt.objects.all())


def prompt_page_list(user, *, search: str = "") -> QuerySet[Prompt]:
    """Prompts by name, each with ``n_workflows`` (how many workflows have a step using it)."""
    queryset = prompts_visible(user).select_related("owner")
    search = (search or "").strip()
    if search:
        queryset = queryset.filter(Q(name__icontains=search) | Q(template__icontains=search))
    return queryset.annotate(n_workflows=Count("steps__workflow", distinct=True)).order_by("name", "id")


def prompt_page_get(user, id: Any) -> Prompt:
    pk = parse_int_id(id)
    prompt = prompts_visible(user).select_related("owner").filter(pk=pk).first() if pk else None
    if prompt is None:
        raise NotFound(f"No prompt with id {id} among yours.", {"prompt": str(id)})
    return prompt


def prompt_usage(prompt: Prompt) -> list[dict[str, Any]]:
    """The workflows whose steps use ``prompt``: ``[{"workflow", "steps": [step, ...]}]`` by name."""
    steps = (
        WorkflowStep.objects.filter(prompt=prompt).select_related("workflow")
        .only("id", "name", "order", "workflow__id", "workflow__name", "workflow__is_active")
        .order_by("workflow__name", "workflow_id", "order")
    )
    usage: dict[int, dict[str, Any]] = {}
    for step in steps:
        usage.setdefault(step.workflow_id, {"workflow": step.workflow, "steps": []})["steps"].append(step)
    return list(usage.values())
