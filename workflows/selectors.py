"""Reads of the workflows domain, always scoped to the user who asks.

Another user's object, a missing one and a malformed id all raise the same NotFound:
an id never tells a user whether someone else's object exists.
"""
from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Max, Prefetch, QuerySet

from promptpilot.common.errors import NotFound, ValidationFailed

from .errors import VersionNotFound
from .models import (
    ExecutionStatus,
    Prompt,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVersion,
)

_MAX_DB_INT = 2**63 - 1


def _int_id(value: Any) -> int | None:
    """A positive integer id, or None for anything else ("abc", "1.5", huge numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit() or len(text) > 19:  # 19 digits: past any database id
            return None
        number = int(text)
    return number if 0 < number <= _MAX_DB_INT else None


def _uuid_id(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


# --- prompts -------------------------------------------------------------------

def prompt_list(user) -> QuerySet[Prompt]:
    return Prompt.objects.filter(owner=user).order_by("name", "id")


def prompt_get(user, id: Any) -> Prompt:
    pk = _int_id(id)
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


def workflow_get(user, id: Any) -> Workflow:
    pk = _int_id(id)
    workflow = _with_definition(Workflow.objects.filter(owner=user, pk=pk)).first() if pk else None
    if workflow is None:
        raise NotFound(f"No workflow with id {id} among yours.", {"workflow": str(id)})
    return workflow


def workflow_version_list(workflow: Workflow) -> QuerySet[WorkflowVersion]:
    return workflow.versions.select_related("created_by").order_by("-number")


def workflow_version_get(workflow: Workflow, number: Any) -> WorkflowVersion:
    num = _int_id(number)
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
    if workflow not in (None, ""):
        if isinstance(workflow, Workflow):
            queryset = queryset.filter(workflow=workflow)
        else:
            pk = _int_id(workflow)
            if pk is None:
                raise ValidationFailed(
                    f'"{workflow}" is not a workflow id; the workflow filter takes the integer id of a workflow.',
                    {"errors": {"workflow": ["Expected an integer workflow id."]}},
                )
            queryset = queryset.filter(workflow_id=pk)
    if status not in (None, ""):
        queryset = queryset.filter(status__in=_parse_statuses(status))
    return queryset.select_related("version", "workflow").order_by("-created_at", "-id")


def execution_get(user, id: Any) -> WorkflowExecution:
    pk = _uuid_id(id)
    execution = None
    if pk is not None:
        execution = (
            WorkflowExecution.objects.filter(workflow__owner=user, pk=pk)
            .select_related("version", "workflow")
            .prefetch_related(
                Prefetch("step_executions", queryset=WorkflowStepExecution.objects.order_by("step_order"))
            )
            .first()
        )
    if execution is None:
        raise NotFound(f"No execution with id {id} among yours.", {"execution": str(id)})
    return execution
