"""The preview page: ``/workflows/{id}/preview`` (DESIGN §6, §10).

A form built from the workflow's variables (or a raw JSON object), "use sample data"
and "dry run" switches, and an approve/reject answer for each APPROVAL step; the Run button posts to the same URL with htmx, which answers
with the result partial (per-step cards) without leaving the page. Without JavaScript
the POST renders the whole page with the result. Nothing is persisted: the page calls
``workflow_preview``, the service behind ``POST /api/workflows/{id}/preview``.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from promptpilot.common.errors import ApplicationError

from ..errors import InputValidationFailed
from ..forms import PreviewForm, pretty_json
from ..models import StepType
from ..services.definitions import workflow_definition_snapshot
from ..services.preview import workflow_preview
from .workflows import is_htmx, workflow_or_404


def _as_json(value: Any) -> str:
    return "" if value is None else pretty_json(value)


def result_view(result: dict[str, Any]) -> dict[str, Any]:
    """The service's answer, with the JSON parts pretty-printed for the cards."""
    steps = []
    for step in result.get("steps") or []:
        steps.append({
            **step,
            "input_json": _as_json(step.get("input")),
            "output_json": _as_json(step.get("output")),
            "error_json": _as_json(step.get("error")),
            "tokens": step.get("token_estimate") or {},
            "cost": step.get("cost_estimate_usd"),
            "dry_run": bool((step.get("token_estimate") or {}).get("dry_run") or step.get("dry_run")),
        })
    return {**result, "steps": steps, "output_json": _as_json(result.get("output")),
            "tokens": result.get("token_estimate") or {}, "cost": result.get("cost_estimate_usd")}


@login_required
@require_http_methods(["GET", "POST"])
def workflow_preview_page(request: HttpRequest, id: int) -> HttpResponse:
    workflow = workflow_or_404(request, id)
    snapshot = workflow_definition_snapshot(workflow=workflow)
    variables = snapshot["variables"]
    approval_steps = [step["name"] for step in snapshot["steps"] if step["type"] == StepType.APPROVAL]
    context: dict[str, Any] = {"workflow": workflow, "variables": variables, "result": None, "notices": []}
    if request.method == "GET":
        context["form"] = PreviewForm(initial={"use_sample_data": True, "mode": "form"}, variables=variables,
                                      approval_steps=approval_steps)
        return render(request, "workflows/preview.html", context)

    form = PreviewForm(request.POST, variables=variables, approval_steps=approval_steps)
    context["form"] = form
    if form.is_valid():
        try:
            result = workflow_preview(workflow=workflow, user=request.user, inputs=form.cleaned_data["inputs"],
                                      use_sample_data=form.cleaned_data["use_sample_data"],
                                      dry_run_models=form.cleaned_data["dry_run_models"],
                                      approvals=form.cleaned_data["approvals"])
        except InputValidationFailed as exc:
            form.add_error(None, exc.message)
            form.add_input_errors(exc.extra.get("errors") or {})
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            context["result"] = result_view(result)
    template = "workflows/partials/_preview_result.html" if is_htmx(request) else "workflows/preview.html"
    return render(request, template, context)
