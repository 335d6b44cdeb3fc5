"""Reads of the workflows domain, always scoped to the user who asks.

Another user's object, a missing one and a malformed id all raise the same NotFound:
an id never tells a user whether someone else's object exists.
"""
from __future__ import annotations

import contextlib
from typing import Any

from django.db.models import Count, Max, Prefetch, QuerySet

from promptpilot.common.errors import NotFound, ValidationFailed
from promptpilot.common.ids import parse_int_id, parse_uuid

from .errors import VersionNotFound
from .models import (
    ExecutionStatus,
    Prompt,
    StepType,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVersion,
)

# --- prompts -------------------------------------------------------------------

def prompt_list(user) -> QuerySet[Prompt]:
    return Prompt.objects.filter(owner=user).order_by("name", "id")


def prompt_get(user, id: Any) -> Prompt:
    pk = parse_int_id(id)
    prompt = Prompt.objects.filter(owner=user, pk=pk).first() if pk else None
    if prompt is None:
        raise NotFound(f"No prompt with id {id} among yours.", {"prompt": str(id)})
    return prompt


# --- workflows -----------------------------------------------------------------

def _with_definition(queryset: QuerySet[Workflow]) -> QuerySet[Workflow]:
    return queryset.annotate(latest_version_number=Max("versions__number")).prefetch_related(
        "variables", Prefetch("steps", queryset=WorkflowStep.objects.order_by("order"))
    )


def workflow_list(user) -> QuerySet[Workflow]:
    return _with_definition(Workflow.objects.filter(owner=user)).order_by("-created_at", "-id")


def workflow_get(user, id: Any, *, definition: bool = True) -> Workflow:
    """One of the user's workflows; ``definition=False`` skips the variables, steps and
    version number, for callers that read the saved version instead (the preview)."""
    pk = parse_int_id(id)
    if pk:
        queryset = Workflow.objects.filter(owner=user, pk=pk)
        # get(), not first(): a look-up by pk needs no ORDER BY, and compiling the model's
        # default ordering was a third of this query's cost (the preview's hot path).
        with contextlib.suppress(Workflow.DoesNotExist):
            return (_with_definition(queryset) if definition else queryset).get()
    raise NotFound(f"No workflow with id {id} among yours.", {"workflow": str(id)})


def workflow_filter_id(value: Any) -> int:
    """The workflow id of a ``?workflow=`` list filter; anything else is a 400 naming the filter."""
    pk = parse_int_id(value)
    if pk is None:
        raise ValidationFailed(
            f'"{value}" is not a workflow id; the workflow filter takes the integer id of a workflow.',
            {"errors": {"workflow": ["Expected an integer workflow id."]}},
        )
    return pk


def workflow_version_list(workflow: Workflow) -> QuerySet[WorkflowVersion]:
    return workflow.versions.select_related("created_by").order_by("-number")


def workflow_version_get(workflow: Workflow, number: Any) -> WorkflowVersion:
    num = parse_int_id(number)
    version = workflow.versions.select_related("created_by").filter(number=num).first() if num else None
    if version is None:
        latest = workflow.versions.aggregate(n=Max("number"))["n"]
        hint = f"versions run from 1 to {latest}" if latest else "it has no versions yet"
        raise VersionNotFound(
            f'Workflow "{workflow.name}" has no version {number}; {hint}.', {"version": str(number)}
        )
    return version


# --- executions ----------------------------------------------------------------

def _parse_statuses(status: str) -> list[str]:
    wanted = [part.strip().upper() for part in status.split(",") if part.strip()]
    allowed = list(ExecutionStatus.values)
    bad = [s for s in wanted if s not in allowed]
    if bad or not wanted:
        raise ValidationFailed(
            f'"{status}" is not a valid status filter; use one of {", ".join(allowed)} '
            "(several may be given, separated by commas).",
            {"errors": {"status": [f"Allowed values: {', '.join(allowed)}."]}},
        )
    return wanted


def execution_list(user, workflow: Any = None, status: str | None = None) -> QuerySet[WorkflowExecution]:
    """The user's executions, newest first, optionally by workflow id and status(es)."""
    queryset = WorkflowExecution.objects.filter(workflow__owner=user)
    # An empty ``?workflow=`` or ``?status=`` is a client's mistake: answered 400, not ignored.
    if workflow is not None:
        if isinstance(workflow, Workflow):
            queryset = queryset.filter(workflow=workflow)
        else:
            queryset = queryset.filter(workflow_id=workflow_filter_id(workflow))
    if status is not None:
        queryset = queryset.filter(status__in=_parse_statuses(status))
    return queryset.select_related("version", "workflow").order_by("-created_at", "-id")


def execution_get(user, id: Any) -> WorkflowExecution:
    pk = parse_uuid(id)
    execution = None
    if pk is not None:
        execution = (
            WorkflowExecution.objects.filter(workflow__owner=user, pk=pk)
            .select_related("version", "workflow")
            .prefetch_related(
                Prefetch("step_executions", queryset=steps_of_runs())
            )
            .first()
        )
    if execution is None:
        raise NotFound(f"No execution with id {id} among yours.", {"execution": str(id)})
    return execution


def steps_of_runs() -> QuerySet[WorkflowStepExecution]:
    """A run's steps in order, without its MAP steps' item rows (``step_items`` lists those)."""
    return WorkflowStepExecution.objects.filter(item_index__isnull=True).order_by("step_order")


def step_items(execution: WorkflowExecution, step_name: str) -> QuerySet[WorkflowStepExecution]:
    """The item rows of the run's MAP step ``step_name``, in item order (the caller has
    checked the run is the user's). Raises NotFound when the run has no such MAP step."""
    step = (WorkflowStepExecution.objects.filter(execution_id=execution.pk, step_name=step_name,
                                                 item_index__isnull=True, step_type=StepType.MAP)
            .values("step_order").first())
    if step is None:
        raise NotFound(f'This run has no MAP step named "{step_name}" (or it has not started yet).',
                       {"step": step_name})
    return WorkflowStepExecution.objects.filter(execution_id=execution.pk, step_order=step["step_order"],
                                                item_index__isnull=False).order_by("item_index")


def item_counts(step_execution: WorkflowStepExecution) -> dict[str, int]:
    """How many items of a MAP step's row are in each status, and in all."""
    counts = dict(WorkflowStepExecution.objects.filter(
        execution_id=step_execution.execution_id, step_order=step_execution.step_order, item_index__isnull=False)
        .values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    return {"total": sum(counts.values()), **{status.lower(): n for status, n in sorted(counts.items())}}
