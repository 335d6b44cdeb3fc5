"""Server-rendered trigger pages (session login). They call the same selectors and
services as ``apis.py``; a service's refusal (``ApplicationError``) is shown on the
page, never a 500. Another user's trigger is a 404, like a missing one.

Secrets are shown once: the create and rotate views keep the new secret encrypted in
the session and redirect to ``secret``, which pops it, so a reload shows nothing.
"""
from __future__ import annotations

import json
import time
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from promptpilot.common.errors import ApplicationError
from workflows.models import ExecutionStatus
from workflows.page_selectors import workflows_visible
from workflows.pages.executions import execution_path
from workflows.run_selectors import executions_visible
from workflows.selectors import workflow_list

from . import selectors
from .errors import SecretUnreadable, TriggerNotFound
from .forms import (
    CONFIG_HELP,
    TriggerCreateForm,
    TriggerEditForm,
    TriggerExecuteForm,
    TriggerRotateForm,
    form_add_service_error,
)
from .models import TriggerKind, WorkflowTrigger
from .serializers import TriggerDetailSerializer, TriggerSerializer
from .services import triggers as trigger_services
from .services.metrics import trigger_metrics
from .services.secrets import secret_decrypt, secret_encrypt

PAGE_SIZE = 50
RECENT_EXECUTIONS = 10
SESSION_SECRETS = "triggers.one_time_secrets"
SECRET_TTL_SECONDS = 600  # a secret not displayed within 10 minutes of its creation is dropped
SECRET_TYPES = (TriggerKind.WEBHOOK, TriggerKind.API)
EXECUTABLE_TYPES = getattr(trigger_services, "EXECUTABLE_TYPES", (TriggerKind.MANUAL, TriggerKind.API))


# --- helpers -------------------------------------------------------------------------

def _trigger_or_404(request: HttpRequest, id: Any) -> WorkflowTrigger:
    try:
        return selectors.trigger_page_get(request.user, id)
    except TriggerNotFound as exc:
        raise Http404(exc.message) from None


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _workflow_choices(user) -> list[tuple[int, str]]:
    """The workflows a new trigger may be attached to: the user's own."""
    return [(workflow.pk, f"{workflow.name} (#{workflow.pk})") for workflow in workflow_list(user)]


def _workflow_filter_choices(user) -> list[tuple[int, str]]:
    """The list's workflow filter: every workflow whose triggers the user sees."""
    workflows = workflows_visible(user).select_related("owner").only("id", "name", "owner__username")
    return [(w.pk, f"{w.name} (#{w.pk})" + (f" · {w.owner.username}" if w.owner_id != user.pk else ""))
            for w in workflows.order_by("name", "id")]


def _available_types() -> list[str]:
    return [str(t) for t in getattr(trigger_services, "AVAILABLE_TYPES", TriggerKind.values)]


def _secret_store(request: HttpRequest) -> dict[str, dict[str, Any]]:
    """The parked secrets of this session, less those older than SECRET_TTL_SECONDS."""
    now = time.time()
    return {
        key: entry for key, entry in (request.session.get(SESSION_SECRETS) or {}).items()
        if isinstance(entry, dict) and now - entry.get("at", 0) < SECRET_TTL_SECONDS
    }


def _secret_keep(request: HttpRequest, trigger: WorkflowTrigger, secret: str, *, reason: str) -> None:
    """Park ``secret`` until the one-time page pops it: encrypted (session rows are no place
    for clear secrets) and for a few minutes at most."""
    store = _secret_store(request)
    store[str(trigger.pk)] = {"token": secret_encrypt(secret), "reason": reason, "at": time.time()}
    request.session[SESSION_SECRETS] = store


def _secret_pop(request: HttpRequest, trigger: WorkflowTrigger) -> tuple[str | None, str | None]:
    store = _secret_store(request)
    entry = store.pop(str(trigger.pk), None)
    if request.session.get(SESSION_SECRETS):
        request.session[SESSION_SECRETS] = store
    if entry is None:
        return None, None
    try:
        return secret_decrypt(entry["token"]), entry.get("reason")
    except (SecretUnreadable, KeyError, TypeError):
        return None, None


def _with_success_rate(queryset: QuerySet[WorkflowTrigger]) -> QuerySet[WorkflowTrigger]:
    """One grouped query for the whole page (no per-row metrics calls)."""
    return queryset.annotate(
        n_completed=Count("executions", filter=Q(executions__status=ExecutionStatus.COMPLETED)),
        n_finished=Count("executions", filter=Q(executions__status__in=ExecutionStatus.finished())),
    )


def _as_datetime(value: Any) -> Any:
    return parse_datetime(value) if isinstance(value, str) else value


def _activity_context(request: HttpRequest, trigger: WorkflowTrigger) -> dict[str, Any]:
    """Metrics, the last invocations and the last executions of ``trigger``."""
    metrics = trigger_metrics(trigger=trigger)
    invocations = list(
        selectors.invocation_list(trigger).select_related("execution")
        .defer("payload", "execution__input", "execution__output", "execution__metadata")[:selectors.RECENT_INVOCATIONS]
    )
    executions = list(
        executions_visible(request.user).filter(trigger=trigger).order_by("-created_at", "-id")
        .only("id", "status", "trigger_type", "error", "created_at", "started_at", "completed_at")[:RECENT_EXECUTIONS]
    )
    unfinished = any(e.status not in ExecutionStatus.finished() for e in executions)
    return {
        "trigger": trigger,
        "metrics": metrics,
        "success_percent": None if metrics["success_rate"] is None else round(metrics["success_rate"] * 100, 1),
        "invocations": invocations,
        "executions": executions,
        "poll": unfinished,
    }


def _scheduled_runs(values: Any) -> list[dict[str, Any]]:
    """The API's ``next_runs`` (``[{"utc", "local"}]`` ISO strings) as datetimes; the local
    one keeps its offset so the page can show the trigger's own time zone."""
    runs = []
    for value in values or []:
        utc, local = (value.get("utc"), value.get("local")) if isinstance(value, dict) else (value, None)
        utc = _as_datetime(utc)
        if utc is not None:
            runs.append({"utc": utc, "local": _as_datetime(local)})
    return runs


def _detail_context(request: HttpRequest, trigger: WorkflowTrigger, **extra: Any) -> dict[str, Any]:
    activity = _activity_context(request, trigger)
    # The API's view of the same trigger: webhook URL, key prefix, schedule preview.
    api_view = TriggerDetailSerializer(trigger, context={
        "request": request, "metrics": activity["metrics"], "recent_invocations": activity["invocations"],
    }).data
    context = {
        **activity,
        "config_json": json.dumps(trigger.config or {}, indent=2, sort_keys=True, ensure_ascii=False),
        "webhook_url": api_view.get("webhook_url"),
        "api_key_prefix": api_view.get("api_key_prefix"),
        "api_execute_url": request.build_absolute_uri(reverse("triggers_api:trigger-execute",
                                                              kwargs={"id": trigger.pk})),
        "previous_secret_expires_at": _as_datetime(api_view.get("previous_secret_expires_at")),
        "next_run_at": _as_datetime(api_view.get("next_run_at")),
        "next_runs": _scheduled_runs(api_view.get("next_runs")),
        "schedule_timezone": (trigger.config or {}).get("timezone") or "UTC",
        "executable": trigger.type in EXECUTABLE_TYPES,
        "has_secret": trigger.type in SECRET_TYPES,
        "execute_form": TriggerExecuteForm(),
        "rotate_form": TriggerRotateForm(),
    }
    context.update(extra)
    return context


# --- pages ---------------------------------------------------------------------------

@login_required
@require_GET
def trigger_list_page(request: HttpRequest) -> HttpResponse:
    workflow = request.GET.get("workflow", "")
    try:
        queryset = selectors.trigger_page_list(request.user, workflow=workflow)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("triggers:list")
    page = Paginator(_with_success_rate(queryset), PAGE_SIZE).get_page(request.GET.get("page"))
    for trigger in page.object_list:
        trigger.success_percent = round(trigger.n_completed * 100 / trigger.n_finished, 1) if trigger.n_finished \
            else None
    return render(request, "triggers/list.html", {
        "page": page,
        "triggers": page.object_list,
        "workflows": _workflow_filter_choices(request.user),
        "workflow_filter": str(workflow),
        "show_owner": request.user.is_staff,
    })


@login_required
@require_http_methods(["GET", "POST"])
def trigger_create_page(request: HttpRequest) -> HttpResponse:
    form_kwargs = {"workflows": _workflow_choices(request.user), "available_types": _available_types()}
    if request.method == "GET":
        initial = {"is_active": True, "type": TriggerKind.MANUAL, "config": "{}"}
        if request.GET.get("workflow"):
            initial["workflow"] = request.GET["workflow"]
        form = TriggerCreateForm(initial=initial, **form_kwargs)
        return render(request, "triggers/form.html", {"form": form, "config_help": CONFIG_HELP, "creating": True})
    form = TriggerCreateForm(request.POST, **form_kwargs)
    if form.is_valid():
        try:
            trigger, secret = trigger_services.trigger_create(owner=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            form_add_service_error(form, exc)
        else:
            if secret:
                _secret_keep(request, trigger, secret, reason="created")
                return redirect("triggers:secret", id=trigger.pk)
            messages.success(request, f'Trigger "{trigger.name}" created.')
            return redirect("triggers:detail", id=trigger.pk)
    return render(request, "triggers/form.html", {"form": form, "config_help": CONFIG_HELP, "creating": True})


@login_required
@require_GET
def trigger_detail_page(request: HttpRequest, id: str) -> HttpResponse:
    trigger = _trigger_or_404(request, id)
    return render(request, "triggers/detail.html", _detail_context(request, trigger))


@login_required
@require_GET
def trigger_activity_partial(request: HttpRequest, id: str) -> HttpResponse:
    """Metrics, invocations and executions, for htmx to refresh in place."""
    trigger = _trigger_or_404(request, id)
    return render(request, "triggers/partials/_activity.html", _activity_context(request, trigger))


@login_required
@require_http_methods(["GET", "POST"])
def trigger_edit_page(request: HttpRequest, id: str) -> HttpResponse:
    trigger = _trigger_or_404(request, id)
    if request.method == "GET":
        form = TriggerEditForm(initial={"name": trigger.name, "is_active": trigger.is_active,
                                        "config": trigger.config or {}})
    else:
        form = TriggerEditForm(request.POST)
        if form.is_valid():
            try:
                trigger_services.trigger_update(trigger=trigger, data=form.cleaned_data)
            except ApplicationError as exc:
                form_add_service_error(form, exc)
                trigger.refresh_from_db()
            else:
                messages.success(request, f'Trigger "{trigger.name}" saved.')
                return redirect("triggers:detail", id=trigger.pk)
    return render(request, "triggers/form.html", {"form": form, "trigger": trigger, "creating": False,
                                                  "config_help": {trigger.type: CONFIG_HELP.get(trigger.type)}})


@login_required
@require_POST
def trigger_toggle(request: HttpRequest, id: str) -> HttpResponse:
    """Enable (``is_active=1``) or disable (``is_active=0``): a state, not a flip, so a
    repeated click does not undo itself."""
    trigger = _trigger_or_404(request, id)
    active = request.POST.get("is_active") in ("1", "true", "on")
    try:
        trigger_services.trigger_update(trigger=trigger, data={"is_active": active})
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f'Trigger "{trigger.name}" {"enabled" if active else "disabled"}.')
    return redirect("triggers:detail", id=trigger.pk)


@login_required
@require_POST
def trigger_rotate(request: HttpRequest, id: str) -> HttpResponse:
    trigger = _trigger_or_404(request, id)
    form = TriggerRotateForm(request.POST)
    grace = (form.cleaned_data.get("grace_seconds") or 0) if form.is_valid() else 0
    try:
        trigger, secret = trigger_services.trigger_rotate_secret(trigger=trigger, grace_seconds=grace)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("triggers:detail", id=trigger.pk)
    _secret_keep(request, trigger, secret, reason="rotated")
    return redirect("triggers:secret", id=trigger.pk)


@never_cache
@login_required
@require_GET
def trigger_secret_page(request: HttpRequest, id: str) -> HttpResponse:
    """The one-time display: the first GET after create/rotate pops the secret; later
    ones say it is gone. ``never_cache`` keeps it out of the browser's caches."""
    trigger = _trigger_or_404(request, id)
    secret, reason = _secret_pop(request, trigger)
    response = render(request, "triggers/secret.html", {
        "trigger": trigger, "secret": secret, "reason": reason, "has_secret": trigger.type in SECRET_TYPES,
        "rotate_form": TriggerRotateForm(),
        "webhook_url": TriggerSerializer(trigger, context={"request": request}).data.get("webhook_url"),
    })
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, private, max-age=0"
    response["Referrer-Policy"] = "no-referrer"
    return response


@login_required
@require_POST
def trigger_execute(request: HttpRequest, id: str) -> HttpResponse:
    """Execute now (MANUAL / API) through the same service as POST /api/triggers/{id}/execute."""
    trigger = _trigger_or_404(request, id)
    form = TriggerExecuteForm(request.POST)
    result = execution = None
    if form.is_valid():
        try:
            invocation = trigger_services.trigger_execute(
                trigger=trigger, body={"input": form.cleaned_data["input"]}, actor=request.user,
                idempotency_key=form.cleaned_data["submission"], verified_by="owner",
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            execution = invocation.execution
        if execution is not None:
            result = format_html(
                'Execution <a href="{}"><code>{}</code></a> {} — status {}.',
                execution_path(execution.pk), execution.pk,
                "was already started by this form" if getattr(invocation, "was_duplicate", False) else "started",
                execution.status,
            )
    if _is_htmx(request):
        # After a run started: a fresh form (new submission id) that keeps the typed input.
        fresh = TriggerExecuteForm(initial={"input": request.POST.get("input", "")})
        context = {**_activity_context(request, trigger), "execute_form": form if result is None else fresh,
                   "result": result, "oob": result is not None}
        return render(request, "triggers/partials/_execute_response.html", context)
    if result is not None:
        messages.success(request, result)
        return redirect("triggers:detail", id=trigger.pk)
    if trigger.type not in EXECUTABLE_TYPES:  # its page has no execute panel to show the error in
        for error in form.non_field_errors():
            messages.error(request, error)
        return redirect("triggers:detail", id=trigger.pk)
    return render(request, "triggers/detail.html", _detail_context(request, trigger, execute_form=form))


@login_required
@require_http_methods(["GET", "POST"])
def trigger_delete_page(request: HttpRequest, id: str) -> HttpResponse:
    trigger = _trigger_or_404(request, id)
    if request.method == "POST":
        name = trigger.name
        try:
            trigger_services.trigger_delete(trigger=trigger)
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return redirect("triggers:detail", id=trigger.pk)
        messages.success(request, f'Trigger "{name}" deleted. Its past executions are kept.')
        return redirect("triggers:list")
    return render(request, "triggers/confirm_delete.html", {"trigger": trigger})
