"""Reads of the builder's workflow pages (DESIGN §10): owners see their own workflows,
staff see everyone's. The API's selectors (``selectors.py``) stay owner-only.

Another user's workflow, a missing one and a malformed id all raise the same NotFound.
"""
from __future__ import annotations

import difflib
import json
from datetime import timedelta
from typing import Any

from django.db.models import Count, IntegerField, Max, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from promptpilot.common.errors import NotFound
from promptpilot.common.ids import parse_int_id

from .models import ExecutionStatus, Workflow, WorkflowExecution, WorkflowStep, WorkflowVersion

RECENT_WINDOW = timedelta(hours=24)


def visible_to(user, queryset: QuerySet, *, owner: str = "owner") -> QuerySet:
    """The pages' one visibility rule: staff see every row of ``queryset``, anyone else
    the rows whose ``owner`` lookup (e.g. ``"workflow__owner"``) is themselves."""
    return queryset if user.is_staff else queryset.filter(**{owner: user})


def workflows_visible(user) -> QuerySet[Workflow]:
    """Every workflow ``user`` may open on the pages."""
    return visible_to(user, Workflow.objects.all())


def workflow_page_list(user, *, search: str = "") -> QuerySet[Workflow]:
    """The list page's rows in one query: last run status and time, finished and
    completed counts (success rate), runs in the last 24 h, step count, latest version.

    Counts over executions are the only join; steps and versions come from subqueries so
    they do not multiply the counts.
    """
    queryset = workflows_visible(user).select_related("owner")
    search = (search or "").strip()
    if search:
        queryset = queryset.filter(Q(name__icontains=search) | Q(description__icontains=search))
    last_run = WorkflowExecution.objects.filter(workflow=OuterRef("pk")).order_by("-created_at", "-id")
    since = timezone.now() - RECENT_WINDOW
    return queryset.annotate(
        n_completed=Count("executions", filter=Q(executions__status=ExecutionStatus.COMPLETED)),
        n_finished=Count("executions", filter=Q(executions__status__in=ExecutionStatus.finished())),
        runs_24h=Count("executions", filter=Q(executions__created_at__gte=since)),
        last_status=Subquery(last_run.values("status")[:1]),
        last_run_at=Subquery(last_run.values("created_at")[:1]),
        n_steps=Coalesce(Subquery(
            WorkflowStep.objects.filter(workflow=OuterRef("pk")).order_by().values("workflow")
            .annotate(n=Count("pk")).values("n"), output_field=IntegerField(),
        ), 0),
        version_number=Subquery(
            WorkflowVersion.objects.filter(workflow=OuterRef("pk")).order_by("-number").values("number")[:1]
        ),
    ).order_by("-updated_at", "-id")


def workflow_page_get(user, id: Any) -> Workflow:
    """One workflow with its variables and steps (prefetched) and latest version number."""
    pk = parse_int_id(id)
    workflow = (
        workflows_visible(user).filter(pk=pk).select_related("owner")
        .annotate(latest_version_number=Max("versions__number"))
        .prefetch_related("variables", Prefetch("steps", queryset=WorkflowStep.objects.select_related("prompt")
                                                 .order_by("order")))
        .first()
    ) if pk else None
    if workflow is None:
        raise NotFound(f"No workflow with id {id} among yours.", {"workflow": str(id)})
    return workflow


def _definition_lines(version: WorkflowVersion | None) -> list[str]:
    if version is None:
        return []
    definition = dict(version.definition or {})
    # Step ids change whenever steps are re-created: noise in a diff.
    definition["steps"] = [{k: v for k, v in s.items() if k != "id"} for s in definition.get("steps", [])]
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def workflow_version_history(workflow: Workflow, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``limit`` versions, newest first, each with a unified diff of its JSON
    definition against the version before it (``diff`` is a list of lines)."""
    versions = list(workflow.versions.select_related("created_by").order_by("-number")[: limit + 1])
    history = []
    for index, version in enumerate(versions[:limit]):
        previous = versions[index + 1] if index + 1 < len(versions) else None
        if previous is None and version.number > 1:
            previous = workflow.versions.filter(number__lt=version.number).order_by("-number").first()
        diff = list(difflib.unified_diff(
            _definition_lines(previous), _definition_lines(version),
            fromfile=f"v{previous.number}" if previous else "(nothing)", tofile=f"v{version.number}",
            lineterm="", n=2,
        ))
        changed = sum(1 for line in diff[2:] if line[:1] in "+-")
        history.append({"version": version, "previous": previous, "diff": diff, "changed_lines": changed})
    return history


def workflow_recent_executions(workflow: Workflow, *, limit: int = 10) -> list[WorkflowExecution]:
    return list(
        workflow.executions.select_related("version")
        .only("id", "status", "trigger_type", "error", "created_at", "started_at", "completed_at",
              "aggregate_tokens", "version__number")
        .order_by("-created_at", "-id")[:limit]
    )
