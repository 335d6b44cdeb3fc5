"""Workflow pages: list, detail (with version restore) and run (DESIGN §10).

Session login; owners see their own workflows, staff see everyone's; another user's id
is a 404, like a missing one. Views parse, call one selector or service and render; a
service's refusal (``ApplicationError``) is shown on the page, never a 500.
"""
from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from promptpilot.common.errors import ApplicationError, NotFound
from triggers.models import WorkflowTrigger

from .. import page_selectors
from ..errors import InputValidationFailed
from ..forms import InputsForm, pretty_json, typed_value_text
from ..models import TriggerType, Workflow
from ..services import executions as execution_services
from ..services import workflows as workflow_services
from ..services.definitions import workflow_definition_snapshot

PAGE_SIZE = 50


def execution_path(execution_id: Any) -> str:
    """The execution page (built in its own module; linked by path)."""
    return f"/executions/{execution_id}/"


def workflow_or_404(request: HttpRequest, id: Any) -> Workflow:
    try:
        return page_selectors.workflow_page_get(request.user, id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _model_summary(step: dict[str, Any]) -> str:
    config = step.get("config") or {}
    model = config.get("model")
    if isinstance(model, dict) and (model.get("provider") or model.get("model")):
        return f"{model.get('provider')}:{model.get('model')}"
    models = config.get("models")
    if isinstance(models, list) and models:
        names = ", ".join(f"{m.get('provider')}:{m.get('model')}" for m in models if isinstance(m, dict))
        return f"{config.get('mode', 'parallel')}: {names}"
    prompt_model = ((step.get("prompt") or {}).get("model_config") or {})
    if prompt_model.get("provider"):
        return f"{prompt_model.get('provider')}:{prompt_model.get('model')} (from the prompt)"
    return ""


def pipeline(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps of a definition as the detail page shows them."""
    rows = []
    for step in definition.get("steps", []):
        config = step.get("config") or {}
        retry = step.get("retry_config") or {}
        rows.append({
            **step,
            "model": _model_summary(step),
            "template": config.get("template") or (step.get("prompt") or {}).get("template") or "",
            "expression": config.get("expression") or "",
            "branches": (config.get("if_true", "continue"), config.get("if_false", "stop")),
            "output_format": config.get("output_format") or "text",
            "retries": retry.get("max_retries") or 0,
        })
    return rows


# --- pages ---------------------------------------------------------------------------

@login_required
@require_GET
def workflow_list_page(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()
    page = Paginator(page_selectors.workflow_page_list(request.user, search=search), PAGE_SIZE).get_page(
        request.GET.get("page"))
    for workflow in page.object_list:
        workflow.success_percent = (round(workflow.n_completed * 100 / workflow.n_finished, 1)
                                    if workflow.n_finished else None)
    return render(request, "workflows/list.html", {
        "page": page, "workflows": page.object_list, "search": search,
        "has_any": bool(page.object_list) or page_selectors.workflows_visible(request.user).exists(),
    })


@login_required
@require_GET
def workflow_detail_page(request: HttpRequest, id: int) -> HttpResponse:
    workflow = workflow_or_404(request, id)
    definition = workflow_definition_snapshot(workflow=workflow)
    triggers = list(WorkflowTrigger.objects.filter(workflow=workflow).order_by("-created_at"))
    return render(request, "workflows/detail.html", {
        "workflow": workflow,
        "variables": definition["variables"],
        "steps": pipeline(definition),
        "history": page_selectors.workflow_version_history(workflow),
        "executions": [(e, execution_path(e.pk)) for e in page_selectors.workflow_recent_executions(workflow)],
        "triggers": triggers,
        "definition_json": pretty_json(definition),
    })


@login_required
@require_POST
def workflow_version_restore_page(request: HttpRequest, id: int, number: int) -> HttpResponse:
    """Restore version ``number`` through the same service as the API's restore: a new version."""
    workflow = workflow_or_404(request, id)
    try:
        workflow_services.workflow_version_restore(workflow=workflow, number=number, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Version {number} restored as version {workflow.latest_version_number}.")
    return redirect("workflows:detail", id=workflow.pk)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_run_page(request: HttpRequest, id: int) -> HttpResponse:
    """Start a real run (MANUAL) with the inputs typed here, then go to its execution page."""
    workflow = workflow_or_404(request, id)
    variables = workflow_definition_snapshot(workflow=workflow)["variables"]
    if request.method == "GET":
        initial = {f"var__{v['name']}": _initial_text(v) for v in variables}
        form = InputsForm(initial=initial, variables=variables)
    else:
        form = InputsForm(request.POST, variables=variables)
        if form.is_valid():
            try:
                execution = execution_services.execution_start(
                    workflow=workflow, inputs=form.cleaned_data["inputs"], trigger_type=TriggerType.MANUAL,
                    started_by=request.user, idempotency_key=form.cleaned_data.get("submission"),
                    metadata={"source": "workflow page"},
                )
            except InputValidationFailed as exc:
                form.add_error(None, exc.message)
                form.add_input_errors(exc.extra.get("errors") or {})
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f'Run of "{workflow.name}" started.')
                return redirect(execution_path(execution.pk))
    return render(request, "workflows/run.html", {"workflow": workflow, "form": form, "variables": variables})


def _initial_text(variable: dict[str, Any]) -> str:
    """A run's form starts from the variable's sample (its default applies when left blank)."""
    return typed_value_text(variable.get("sample"), variable.get("type") or "STRING")
