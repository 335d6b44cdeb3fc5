"""Execution pages (DESIGN §10), mounted at /executions/: the runs list with filters,
one run's page with its step timeline, and the cancel / retry buttons.

Reads go through ``run_selectors`` (owners see their own runs, staff everyone's);
cancel and retry call the same services as the API and show a refusal (a 409 such as
an inactive workflow) as a message on the page, never a 500.

While a run is unfinished, its page polls ``live`` (htmx) every second; the partial it
answers stops carrying the poll once the run has ended, so polling stops by itself.
"""
from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from promptpilot.common.errors import ApplicationError, NotFound

from .. import run_selectors
from ..models import ExecutionStatus, StepExecutionStatus, StepType, WorkflowExecution, WorkflowStepExecution
from ..services import approvals as approval_services
from ..services import executions as execution_services
from .run_forms import ApprovalDecisionForm, ExecutionFilterForm

PAGE_SIZE = 25
POLL_SECONDS = 1
HTMX_STOP_POLLING = 286
# A bar never thinner than this (percent of the timeline), so an instant step stays visible.
MIN_BAR_PERCENT = 0.6


def execution_path(execution_id: Any) -> str:
    return f"/executions/{execution_id}/"


def _execution_or_404(request: HttpRequest, id: Any) -> WorkflowExecution:
    try:
        return run_selectors.execution_page_get(request.user, id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _pretty(value: Any) -> str | None:
    if value is None or value == {} or value == []:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _timeline(execution: WorkflowExecution, steps: list[WorkflowStepExecution]) -> dict[str, Any]:
    """Bars proportional to each step's duration, placed on the run's own time axis
    (its start to its end, or to now while it runs)."""
    now = timezone.now()
    starts = [s.started_at for s in steps if s.started_at]
    origin = execution.started_at or (min(starts) if starts else None)
    ends = [s.completed_at or (now if s.started_at else None) for s in steps]
    end = execution.completed_at or (now if origin else None)
    candidates = [e for e in ends if e] + ([end] if end else [])
    end = max(candidates) if candidates else None
    span = (end - origin).total_seconds() if origin and end else 0
    rows = []
    for step, step_end in zip(steps, ends, strict=True):
        row = {"step": step, "left": 0.0, "width": 0.0, "has_bar": False, "running": False}
        if origin and step.started_at and step_end:
            offset = max((step.started_at - origin).total_seconds(), 0)
            length = max((step_end - step.started_at).total_seconds(), 0)
            left = offset * 100 / span if span else 0
            width = length * 100 / span if span else 100
            width = max(width, MIN_BAR_PERCENT)
            row.update(left=round(min(left, 100 - MIN_BAR_PERCENT), 2), width=round(min(width, 100 - left), 2),
                       has_bar=True, running=step.completed_at is None)
        row["duration_ms"] = step.duration_ms if step.completed_at else (
            int((now - step.started_at).total_seconds() * 1000) if step.started_at else None)
        rows.append(row)
    return {"rows": rows, "span_ms": int(span * 1000) if span else None}


def _step_view(step: WorkflowStepExecution) -> dict[str, Any]:
    model_outputs = step.model_outputs if isinstance(step.model_outputs, list) else []
    return {
        "step": step,
        "input": _pretty(step.input),
        "output": _pretty(step.output),
        "outputs": _pretty(step.outputs),
        "error": step.error if isinstance(step.error, dict) else ({"message": step.error} if step.error else None),
        "error_json": _pretty(step.error),
        "model_outputs": [m for m in model_outputs if isinstance(m, dict)],
        "tokens": step.tokens if isinstance(step.tokens, dict) else {},
        "warnings": step.warnings if isinstance(step.warnings, list) else [],
        "retry_config": _pretty(step.retry_config),
    }


ITEMS_PAGE_SIZE = 50


def _items_view(request: HttpRequest, execution: WorkflowExecution, step: WorkflowStepExecution) -> dict[str, Any] | None:
    """A MAP step's items: counts by status and one page of rows (``?items_page=``)."""
    if step.step_type != StepType.MAP:
        return None
    page = Paginator(run_selectors.step_items(execution, step.step_name), ITEMS_PAGE_SIZE) \
        .get_page(request.GET.get("items_page"))
    rows = [{"row": row, "output": _pretty(row.output), "error": row.error if isinstance(row.error, dict) else None}
            for row in page.object_list]
    return {"counts": run_selectors.item_counts(step), "page": page, "rows": rows}


def _page_context(request: HttpRequest, execution: WorkflowExecution) -> dict[str, Any]:
    """Everything the execution page shows; the live partial re-renders all of it."""
    steps = list(execution.step_executions.all())
    unfinished = execution.status not in ExecutionStatus.finished()
    trigger = execution.trigger
    is_owner = execution.workflow.owner_id == request.user.pk
    approvals = [_approval_view(request, s, is_owner) for s in steps
                 if s.status == StepExecutionStatus.WAITING and s.step_type == StepType.APPROVAL]
    return {
        "execution": execution,
        "timeline": _timeline(execution, steps),
        "steps": [{**_step_view(step), "items": _items_view(request, execution, step)} for step in steps],
        "items_page": request.GET.get("items_page") or "",
        "input": _pretty(execution.input),
        "output": _pretty(execution.output),
        "metadata": _pretty(execution.metadata),
        "tokens": execution.aggregate_tokens if isinstance(execution.aggregate_tokens, dict) else {},
        # Not while an approval waits: a refresh would wipe a comment being typed.
        "poll": unfinished and not approvals,
        "poll_seconds": POLL_SECONDS,
        "can_cancel": unfinished,
        "can_retry": execution.status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED),
        "waiting_steps": [s for s in steps if s.status == StepExecutionStatus.WAITING],
        "approvals": approvals,
        "invocation": run_selectors.execution_invocation(execution),
        "trigger": trigger,
        "retries": run_selectors.execution_retries(execution),
        "children": run_selectors.execution_children(execution),
        "is_owner": is_owner,
        "now": timezone.now(),
    }


def _approval_view(request: HttpRequest, step: WorkflowStepExecution, is_owner: bool) -> dict[str, Any]:
    output = step.output if isinstance(step.output, dict) else {}
    return {
        "step": step,
        "message": output.get("message") or "",
        "form": ApprovalDecisionForm(fields=output.get("form") or [], prefix=step.step_name),
        "expires_at": step.available_at,
        # The owner decides, and only they see the one-use link (staff viewing: neither).
        "link": approval_services.approval_url(step, base_url=request.build_absolute_uri("/")) if is_owner else None,
    }


# --- pages ---------------------------------------------------------------------------

@login_required
@require_GET
def execution_list_page(request: HttpRequest) -> HttpResponse:
    workflows = list(run_selectors.workflows_for_filter(request.user))
    choices = [(w.pk, f"{w.name} (#{w.pk})" + (f" · {w.owner.username}" if request.user.is_staff else ""))
               for w in workflows]
    form = ExecutionFilterForm(request.GET or None, workflows=choices)
    filters = form.filters() if request.GET else {}
    page = Paginator(run_selectors.execution_page_list(request.user, **filters), PAGE_SIZE) \
        .get_page(request.GET.get("page"))
    return render(request, "executions/list.html", {
        "form": form,
        "page": page,
        "executions": page.object_list,
        "filtered": bool(filters),
        "has_workflows": bool(workflows),
        "show_owner": request.user.is_staff,
    })


@login_required
@require_GET
def execution_detail_page(request: HttpRequest, id: str) -> HttpResponse:
    execution = _execution_or_404(request, id)
    return render(request, "executions/detail.html", _page_context(request, execution))


@login_required
@require_GET
def execution_live_partial(request: HttpRequest, id: str) -> HttpResponse:
    """The page's inner part, for htmx to swap in place while the run is unfinished. Once
    the run has ended the answer is a 286 (htmx's "stop polling"), with the final state."""
    execution = _execution_or_404(request, id)
    context = _page_context(request, execution)
    response = render(request, "executions/partials/_live.html", context)
    if execution.status in ExecutionStatus.finished() or context["approvals"]:
        response.status_code = HTMX_STOP_POLLING
    return response


@login_required
@require_POST
def execution_cancel(request: HttpRequest, id: str) -> HttpResponse:
    execution = _execution_or_404(request, id)
    try:
        execution_services.execution_cancel(execution=execution, user=request.user)
    except ApplicationError as exc:
        messages.error(request, f"Not cancelled: {exc.message}")
    else:
        messages.success(request, "Execution cancelled: no further step will start.")
    return redirect(execution_path(execution.pk))


@login_required
@require_POST
def execution_retry(request: HttpRequest, id: str) -> HttpResponse:
    execution = _execution_or_404(request, id)
    try:
        retry = execution_services.execution_retry(execution=execution, user=request.user)
    except ApplicationError as exc:
        messages.error(request, f"Not retried: {exc.message}")
        return redirect(execution_path(execution.pk))
    resume = (retry.metadata or {}).get("resume_from")
    messages.success(request, f"Retry started{f' from step {resume}' if resume else ''}; "
                              "steps that had completed keep their outputs.")
    return redirect(execution_path(retry.pk))


def _decide(request: HttpRequest, id: str, *, approved: bool) -> HttpResponse:
    execution = _execution_or_404(request, id)
    if execution.workflow.owner_id != request.user.pk:
        raise Http404("Only the run's owner decides its approvals.")
    step = request.POST.get("step") or None
    try:
        waiting = approval_services.waiting_approval(execution=execution, step=step)
        output = waiting.output if isinstance(waiting.output, dict) else {}
        form = ApprovalDecisionForm(request.POST, fields=output.get("form") or [], prefix=waiting.step_name)
        approval_services.approval_decide(
            execution=execution, approved=approved, decided_by=request.user.get_username(),
            step=waiting.step_name, comment=form.comment_text(), data=form.data_values())
    except ApplicationError as exc:
        errors = (exc.extra or {}).get("errors") or {}
        detail = "; ".join(f"{k.removeprefix('data.')}: {', '.join(v)}" for k, v in errors.items())
        messages.error(request, f"Not {'approved' if approved else 'rejected'}: {exc.message if not detail else detail}")
    else:
        messages.success(request, f"Step {waiting.step_name} {'approved' if approved else 'rejected'}; the run goes on.")
    return redirect(execution_path(execution.pk))


@login_required
@require_POST
def execution_approve(request: HttpRequest, id: str) -> HttpResponse:
    return _decide(request, id, approved=True)


@login_required
@require_POST
def execution_reject(request: HttpRequest, id: str) -> HttpResponse:
    return _decide(request, id, approved=False)


@login_required
@require_GET
def awaiting_approval_page(request: HttpRequest) -> HttpResponse:
    """The user's approvals waiting for a decision, oldest first (staff: everyone's)."""
    page = Paginator(run_selectors.approvals_awaiting(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "executions/awaiting.html", {"page": page, "steps": page.object_list,
                                                        "show_owner": request.user.is_staff})


@require_GET
def approval_link_page(request: HttpRequest) -> HttpResponse:
    """The page a signed approval link opens, for people without an account. The token is
    in the URL's fragment, which never reaches the server: the page's script posts it to
    /api/approvals/ (see services/approvals.py)."""
    return render(request, "executions/approval_link.html", {})
