"""The workflow editor: ``/workflows/new`` and ``/workflows/{id}/edit`` (DESIGN §10).

Variables and steps are Django formsets (add, remove and reorder work with the small
script in ``static/js/workflows.js``, and without it through the position and remove
fields). Saving calls ``workflow_create`` / ``workflow_update``, which validate the whole
definition and make a new version; their errors, keyed by paths such as
``steps[1].config.template``, are shown next to the field they name.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from promptpilot.common.errors import ApplicationError
from providers.connections import connection_names
from providers.models import ModelPrice
from providers.registry import known_providers

from ..forms import (
    StepForm,
    StepFormSet,
    VariableForm,
    VariableFormSet,
    WorkflowForm,
    definition_errors_to_forms,
)
from ..models import Prompt, StepType, Workflow
from ..services import workflows as workflow_services
from ..services.definitions import workflow_definition_snapshot
from .workflows import workflow_or_404

DEFAULT_MODELS = {"echo": ["echo"]}


def provider_names() -> list[str]:
    """The model picker's providers: built-ins, then active OpenAI-compatible connections."""
    builtin = known_providers()
    return [*builtin, *[name for name in connection_names() if name not in builtin]]


def model_names() -> list[str]:
    """Suggestions for the model box: models with a known price, and echo's."""
    names = {model for models in DEFAULT_MODELS.values() for model in models}
    names.update(ModelPrice.objects.values_list("model", flat=True))
    return sorted(names)


def _prompt_choices(owner) -> list[tuple[int, str]]:
    return [(p.pk, p.name) for p in Prompt.objects.filter(owner=owner).order_by("name", "pk")]


def _display_order(formset: forms.BaseFormSet) -> list[forms.Form]:
    """The forms in the order the builder arranged them (their position field), removed
    ones last: they stay in the page, hidden, so the formset's numbering holds."""
    def key(item: tuple[int, forms.Form]) -> tuple[int, float, int]:
        index, form = item
        deleted = form.is_bound and form["DELETE"].value() in (True, "on", "true", "1")
        try:
            position = float(form["ORDER"].value())
        except (TypeError, ValueError):
            position = float("inf")
        return (1 if deleted else 0, position, index)

    return [form for _, form in sorted(enumerate(formset.forms), key=key)]


def _editor_context(*, workflow: Workflow | None, workflow_form: WorkflowForm, variables: forms.BaseFormSet,
                    steps: forms.BaseFormSet, top_errors: list[str] | None = None) -> dict[str, Any]:
    return {
        "workflow": workflow,
        "creating": workflow is None,
        "form": workflow_form,
        "variables": variables,
        "variable_forms": _display_order(variables),
        "steps": steps,
        "step_forms": _display_order(steps),
        "top_errors": top_errors or [],
        "model_names": model_names(),
        "step_types": StepType.choices,
    }


def _render(request: HttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    return render(request, "workflows/editor.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_create_page(request: HttpRequest) -> HttpResponse:
    return _editor(request, workflow=None)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_edit_page(request: HttpRequest, id: int) -> HttpResponse:
    return _editor(request, workflow=workflow_or_404(request, id))


def _editor(request: HttpRequest, *, workflow: Workflow | None) -> HttpResponse:
    owner = workflow.owner if workflow is not None else request.user
    step_kwargs = {"providers": provider_names(), "prompts": _prompt_choices(owner)}
    if request.method == "GET":
        workflow_form, variables, steps = _initial_forms(workflow, step_kwargs)
        return _render(request, _editor_context(workflow=workflow, workflow_form=workflow_form,
                                                variables=variables, steps=steps))

    workflow_form = WorkflowForm(request.POST)
    variables = VariableFormSet(request.POST, prefix="variables")
    steps = StepFormSet(request.POST, prefix="steps", form_kwargs=step_kwargs)
    valid = all([workflow_form.is_valid(), variables.is_valid(), steps.is_valid()])
    top_errors: list[str] = []
    if valid:
        variable_forms = list(variables.ordered_forms)
        step_forms = list(steps.ordered_forms)
        data = {
            **workflow_form.to_data(),
            "variables": [form.to_definition() for form in variable_forms],
            "steps": [form.to_definition(order=position) for position, form in enumerate(step_forms, start=1)],
        }
        before = workflow.latest_version_number if workflow is not None else None
        try:
            if workflow is None:
                saved = workflow_services.workflow_create(owner=request.user, data=data)
            else:
                saved = workflow_services.workflow_update(workflow=workflow, data=data, user=request.user)
        except ApplicationError as exc:
            errors = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
            top_errors = [exc.message]
            if errors:
                top_errors += definition_errors_to_forms(errors, workflow_form=workflow_form,
                                                         variable_forms=variable_forms, step_forms=step_forms)
        else:
            number = saved.latest_version_number
            if workflow is None:
                messages.success(request, f'Workflow "{saved.name}" created (version {number}).')
            elif number != before:
                messages.success(request, f'Saved "{saved.name}" as version {number}.')
            else:
                messages.info(request, f'Saved "{saved.name}"; the definition did not change, so it stays '
                                       f"version {number}.")
            return redirect("workflows:detail", id=saved.pk)
    return _render(request, _editor_context(workflow=workflow, workflow_form=workflow_form, variables=variables,
                                            steps=steps, top_errors=top_errors), status=400)


def _initial_forms(workflow: Workflow | None, step_kwargs: dict[str, Any]):
    if workflow is None:
        # A new workflow starts with one variable and one step to fill in (each removable).
        workflow_form = WorkflowForm(initial={"is_active": True})
        variables = VariableFormSet(prefix="variables", initial=[{"type": "STRING", "required": True}])
        steps = StepFormSet(prefix="steps", form_kwargs=step_kwargs, initial=[
            {"type": StepType.PROMPT, "provider": "echo", "model": "echo", "output_format": "text",
             "on_error": "fail", "max_retries": 0, "jitter": True, "retry_on": ["transient"],
             "if_true": "continue", "if_false": "stop"},
        ])
        return workflow_form, variables, steps
    definition = workflow_definition_snapshot(workflow=workflow)
    workflow_form = WorkflowForm(initial={
        "name": workflow.name, "description": workflow.description, "is_active": workflow.is_active,
        "timeout_seconds": workflow.timeout_seconds,
        "max_concurrent_executions": workflow.max_concurrent_executions,
    })
    variables = VariableFormSet(prefix="variables",
                                initial=[VariableForm.initial_from(v) for v in definition["variables"]])
    steps = StepFormSet(prefix="steps", initial=[StepForm.initial_from(s) for s in definition["steps"]],
                        form_kwargs=step_kwargs)
    return workflow_form, variables, steps
