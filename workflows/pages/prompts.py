"""Prompt pages (DESIGN §10), mounted at /prompts/: list, detail with the workflows that
use each prompt, create and edit through ``prompt_create`` / ``prompt_update``."""
from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from promptpilot.common.errors import ApplicationError, NotFound

from .. import run_selectors
from ..models import Prompt
from ..services import workflows as workflow_services
from .run_forms import PromptForm, form_add_service_error

PAGE_SIZE = 50


def _prompt_or_404(request: HttpRequest, id: Any) -> Prompt:
    try:
        return run_selectors.prompt_page_get(request.user, id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _data(form: PromptForm) -> dict[str, Any]:
    return {field: form.cleaned_data[field] for field in ("name", "template", "system", "model_config")}


@login_required
@require_GET
def prompt_list_page(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()
    page = Paginator(run_selectors.prompt_page_list(request.user, search=search), PAGE_SIZE) \
        .get_page(request.GET.get("page"))
    return render(request, "prompts/list.html", {
        "page": page, "prompts": page.object_list, "search": search, "show_owner": request.user.is_staff,
    })


@login_required
@require_GET
def prompt_detail_page(request: HttpRequest, id: str) -> HttpResponse:
    prompt = _prompt_or_404(request, id)
    return render(request, "prompts/detail.html", {
        "prompt": prompt, "usage": run_selectors.prompt_usage(prompt),
        "model_config_json": json.dumps(prompt.model_config, ensure_ascii=False) if prompt.model_config else "",
        "is_owner": prompt.owner_id == request.user.pk,
    })


@login_required
@require_http_methods(["GET", "POST"])
def prompt_create_page(request: HttpRequest) -> HttpResponse:
    form = PromptForm(request.POST or None, initial={"model_config": {"provider": "echo", "model": "echo"}})
    if request.method == "POST" and form.is_valid():
        try:
            prompt = workflow_services.prompt_create(owner=request.user, data=_data(form))
        except ApplicationError as exc:
            form_add_service_error(form, exc)
        else:
            messages.success(request, f'Prompt "{prompt.name}" created. Link it from a PROMPT step to use it.')
            return redirect("prompts:detail", id=prompt.pk)
    return render(request, "prompts/form.html", {"form": form, "creating": True})


@login_required
@require_http_methods(["GET", "POST"])
def prompt_edit_page(request: HttpRequest, id: str) -> HttpResponse:
    prompt = _prompt_or_404(request, id)
    usage = run_selectors.prompt_usage(prompt)
    if request.method == "GET":
        form = PromptForm(initial={"name": prompt.name, "template": prompt.template, "system": prompt.system,
                                   "model_config": prompt.model_config or {}})
    else:
        form = PromptForm(request.POST)
        if form.is_valid():
            try:
                workflow_services.prompt_update(prompt=prompt, data=_data(form), user=request.user)
            except ApplicationError as exc:
                form_add_service_error(form, exc)
                prompt.refresh_from_db()
            else:
                note = f" {len(usage)} workflow(s) using it got a new version." if usage else ""
                messages.success(request, f'Prompt "{prompt.name}" saved.{note}')
                return redirect("prompts:detail", id=prompt.pk)
    return render(request, "prompts/form.html", {"form": form, "prompt": prompt, "usage": usage, "creating": False})
