"""Admin for ops staff: inspect every run, cancel or retry it, edit definitions.

Staff see everything here. Executions and their steps are records of what happened,
so they are read-only; the only writes are the cancel / retry actions, which go
through the same services as the API. Definition edits made here snapshot a new
WorkflowVersion, so a run in flight keeps the version it started with.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, DurationField, ExpressionWrapper, F, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from promptpilot.common.errors import ApplicationError

from .attention_selectors import EXECUTION_REASONS, executions_needing_attention
from .models import (
    ExecutionStatus,
    HttpCredential,
    Prompt,
    StepExecutionStatus,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVariable,
    WorkflowVersion,
)
from .services.definitions import workflow_version_create

logger = logging.getLogger(__name__)

EMPTY = "—"

# Badge colours by status; anything unknown falls back to grey.
STATUS_COLOURS: dict[str, str] = {
    ExecutionStatus.PENDING: "#6c757d",
    ExecutionStatus.RUNNING: "#0d6efd",
    ExecutionStatus.WAITING: "#6f42c1",
    ExecutionStatus.COMPLETED: "#198754",
    ExecutionStatus.FAILED: "#dc3545",
    ExecutionStatus.CANCELLED: "#b35c00",
    StepExecutionStatus.SKIPPED: "#8c959d",
}

_PRE_STYLE = (
    "margin:0;padding:6px 8px;max-height:28em;max-width:70em;overflow:auto;"
    "white-space:pre-wrap;word-break:break-word;font-size:12px;line-height:1.4;"
    "background:var(--darkened-bg,#f8f8f8);border:1px solid var(--hairline-color,#e8e8e8);border-radius:4px;"
)


def pretty_json(value: Any) -> SafeString | str:
    """``value`` as indented JSON in a ``<pre>``, escaped (outputs come from models and users)."""
    if value is None:
        return EMPTY
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return format_html('<pre class="pp-json" style="{}">{}</pre>', _PRE_STYLE, text)


def status_badge(status: str, label: str | None = None) -> SafeString:
    colour = STATUS_COLOURS.get(status, "#6c757d")
    return format_html(
        '<span class="pp-status pp-status-{}" style="display:inline-block;padding:1px 8px;border-radius:10px;'
        'color:#fff;background:{};font-size:11px;font-weight:600;letter-spacing:.02em">{}</span>',
        status.lower(), colour, label or status,
    )


def format_duration(ms: int | None) -> str:
    if ms is None:
        return EMPTY
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s"


def admin_link(obj: Any, label: Any | None = None) -> SafeString | str:
    """A link to ``obj``'s admin change page."""
    if obj is None:
        return EMPTY
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label if label is not None else obj)


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def changelist_link(model: type, label: str, **filters: Any) -> SafeString:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(filters), label)


class ReadOnlyAdminMixin:
    """View-only pages: records of what happened are not edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Prompts ----------------------------------------------------------------


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "model_summary", "created_at", "updated_at")
    list_filter = ("created_at",)
    list_select_related = ("owner",)
    search_fields = ("name", "template", "system", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("created_at", "updated_at")
    date_hierarchy = "created_at"

    @admin.display(description="default model")
    def model_summary(self, obj: Prompt) -> str:
        config = obj.model_config or {}
        if not isinstance(config, dict) or not config.get("provider"):
            return EMPTY
        return f"{config.get('provider')}:{config.get('model', '?')}"


# --- Workflows ---------------------------------------------------------------


class WorkflowVariableInline(admin.TabularInline):
    model = WorkflowVariable
    extra = 0
    fields = ("name", "type", "required", "default", "sample", "description")


def _kept_rows(formset: BaseInlineFormSet | None) -> list[dict[str, Any]]:
    """The cleaned rows a formset will save (not deleted, not blank extras)."""
    if formset is None:
        return []
    return [
        form.cleaned_data for form in formset.forms
        if getattr(form, "cleaned_data", None) and not form.cleaned_data.get("DELETE")
    ]


class DefinitionCheckedStepFormSet(BaseInlineFormSet):
    """Checks the whole edited definition (steps + variables) with the engine's own rules,
    as the API does, so an admin edit cannot save a workflow that cannot run."""

    variables_formset: BaseInlineFormSet | None = None  # linked by WorkflowAdmin._create_formsets
    definition_warnings: list[str] = []  # set by clean(); shown by WorkflowAdmin.save_related

    def clean(self) -> None:
        super().clean()
        if any(self.errors) or (self.variables_formset is not None and not self.variables_formset.is_valid()):
            return  # field errors first; they are shown next to their fields
        from .services.definition_check import definition_check

        steps = [
            {
                "name": row.get("name"),
                "order": row.get("order"),
                "type": row.get("type"),
                "config": row.get("config") or {},
                "retry_config": row.get("retry_config") or {},
                "on_error": row.get("on_error") or "fail",
                "timeout_seconds": row.get("timeout_seconds"),
                "prompt": _prompt_dict(row.get("prompt")),
            }
            for row in _kept_rows(self)
        ]
        if self.variables_formset is not None:
            variables = [
                {k: row.get(k) for k in ("name", "type", "required", "default", "sample", "description")}
                for row in _kept_rows(self.variables_formset)
            ]
        else:
            variables = list(self.instance.variables.values("name", "type", "required", "default", "sample"))
        # The same check as the API and the pages: errors refuse the save, warnings are shown after it.
        check = definition_check(steps=steps, variables=variables)
        if check.errors:
            raise forms.ValidationError(
                [f"{_where(path, steps, variables)}: {message}" for path, messages in check.errors.items()
                 for message in messages]
            )
        self.definition_warnings = [warning["message"] for warning in check.warnings]


def _prompt_dict(prompt: Prompt | None) -> dict[str, Any] | None:
    if prompt is None:
        return None
    return {"id": prompt.pk, "name": prompt.name, "template": prompt.template, "system": prompt.system,
            "model_config": prompt.model_config}


def _where(path: str, steps: list[dict[str, Any]], variables: list[dict[str, Any]]) -> str:
    """``steps[1].config.expression`` -> ``step "check" config.expression``."""
    match = re.match(r"^(steps|variables)\[(\d+)\]\.?(.*)$", path)
    if not match:
        return path
    rows = steps if match.group(1) == "steps" else variables
    index = int(match.group(2))
    name = rows[index].get("name") if index < len(rows) else None
    noun = "step" if match.group(1) == "steps" else "variable"
    return f'{noun} "{name}" {match.group(3)}'.strip()


class WorkflowStepInline(admin.StackedInline):
    model = WorkflowStep
    formset = DefinitionCheckedStepFormSet
    extra = 0
    ordering = ("order",)
    autocomplete_fields = ("prompt",)
    fields = (("order", "name", "type"), "prompt", "config", "retry_config", ("on_error", "timeout_seconds"))


def _count_subquery(model: type, field: str) -> Coalesce:
    """COUNT of ``model`` rows pointing at the outer row, as a subquery (no join fan-out)."""
    counts = (
        model.objects.filter(**{field: OuterRef("pk")})
        .order_by()
        .values(field)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "is_active", "version_count", "execution_count", "created_at", "updated_at")
    list_filter = ("is_active", "created_at")
    list_select_related = ("owner",)
    search_fields = ("name", "description", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("page_links", "current_version", "versions_link", "executions_link", "created_at",
                       "updated_at")
    inlines = (WorkflowVariableInline, WorkflowStepInline)
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workflow]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                version_count=_count_subquery(WorkflowVersion, "workflow"),
                execution_count=_count_subquery(WorkflowExecution, "workflow"),
            )
        )

    @admin.display(description="versions", ordering="version_count")
    def version_count(self, obj: Workflow) -> int:
        return obj.version_count

    @admin.display(description="executions", ordering="execution_count")
    def execution_count(self, obj: Workflow) -> int:
        return obj.execution_count

    @admin.display(description="pages")
    def page_links(self, obj: Workflow) -> SafeString | str:
        if not obj.pk:
            return EMPTY
        return format_html('<a href="{}">Workflow page</a> · <a href="{}">Preview</a>',
                           reverse("workflows:detail", args=[obj.pk]), reverse("workflows:preview", args=[obj.pk]))

    @admin.display(description="current version")
    def current_version(self, obj: Workflow) -> SafeString | str:
        version = obj.latest_version if obj.pk else None
        return admin_link(version, f"v{version.number}") if version else EMPTY

    @admin.display(description="versions")
    def versions_link(self, obj: Workflow) -> SafeString | str:
        if not obj.pk:
            return EMPTY
        return changelist_link(WorkflowVersion, counted(obj.versions.count(), "version"), workflow__id__exact=obj.pk)

    @admin.display(description="executions")
    def executions_link(self, obj: Workflow) -> SafeString | str:
        if not obj.pk:
            return EMPTY
        return changelist_link(WorkflowExecution, counted(obj.executions.count(), "execution"), workflow__id__exact=obj.pk)

    def _create_formsets(self, request: HttpRequest, obj: Workflow, change: bool):
        formsets, inline_instances = super()._create_formsets(request, obj, change)
        by_model = {formset.model: formset for formset in formsets}
        steps = by_model.get(WorkflowStep)
        if isinstance(steps, DefinitionCheckedStepFormSet):
            steps.variables_formset = by_model.get(WorkflowVariable)
        return formsets, inline_instances

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        # NOTE: rows are saved one by one, so swapping two steps' orders (or two names)
        # would trip the unique constraints half-way. Park the rows that change a unique
        # field, or go away, on values nobody uses first; the save then writes the real ones.
        unique_fields = {WorkflowStep: ("order", "name"), WorkflowVariable: ("name",)}.get(formset.model)
        if unique_fields:
            moving = [
                f.instance.pk for f in formset.initial_forms
                if f.instance.pk and (formset._should_delete_form(f) or set(unique_fields) & set(f.changed_data))
            ]
            for offset, pk in enumerate(moving, start=1):
                parked = {"name": f"__parked_{pk}"}
                if "order" in unique_fields:
                    parked["order"] = 1_000_000 + offset
                formset.model.objects.filter(pk=pk).update(**parked)
        super().save_formset(request, form, formset, change)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Inlines (variables, steps) are saved by now: snapshot the whole definition.
        # workflow_version_create returns the latest version when nothing changed.
        workflow = form.instance
        before = workflow.versions.order_by("-number").values_list("number", flat=True).first()
        version = workflow_version_create(workflow=workflow, user=request.user, note="edited in admin")
        if version.number != before:
            self.message_user(request, f"Saved the definition as version {version.number}.", messages.INFO)
        for formset in formsets:
            for warning in getattr(formset, "definition_warnings", []):
                self.message_user(request, f"Warning: {warning}", messages.WARNING)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("__str__", "note", "created_by", "created_at", "step_count")
    list_filter = ("workflow", "created_at")
    list_select_related = ("workflow", "created_by")
    search_fields = ("workflow__name", "note")
    date_hierarchy = "created_at"
    actions = ("restore_versions",)
    fields = ("workflow_link", "number", "note", "created_by", "created_at", "pretty_definition")
    readonly_fields = fields

    def get_urls(self):
        return [
            path("<path:object_id>/restore/", self.admin_site.admin_view(self.restore_view),
                 name=f"{self.opts.app_label}_{self.opts.model_name}_restore"),
            *super().get_urls(),
        ]

    def has_restore_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("workflows.change_workflow")

    def render_change_form(self, request: HttpRequest, context: dict, *args: Any, **kwargs: Any):
        context["can_restore"] = self.has_restore_permission(request)
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="workflow")
    def workflow_link(self, obj: WorkflowVersion) -> SafeString | str:
        return admin_link(obj.workflow)

    @admin.display(description="steps")
    def step_count(self, obj: WorkflowVersion) -> int:
        return len((obj.definition or {}).get("steps", []))

    @admin.display(description="definition")
    def pretty_definition(self, obj: WorkflowVersion) -> SafeString | str:
        return pretty_json(obj.definition)

    def _restore(self, request: HttpRequest, version: WorkflowVersion) -> bool:
        from .services.workflows import workflow_version_restore

        try:
            workflow = workflow_version_restore(workflow=version.workflow, number=version.number, user=request.user)
        except ApplicationError as exc:
            self.message_user(request, f"{version}: {exc.message}", messages.ERROR)
            return False
        latest = workflow.versions.order_by("-number").first()
        self.message_user(
            request,
            format_html("{}: restored as {}.", version, admin_link(latest, f"v{latest.number}") if latest else "?"),
            messages.SUCCESS,
        )
        return True

    @admin.action(description="Restore the selected version (as a new version)", permissions=["restore"])
    def restore_versions(self, request: HttpRequest, queryset: QuerySet[WorkflowVersion]) -> None:
        versions = list(queryset.select_related("workflow"))
        if len({v.workflow_id for v in versions}) != len(versions):
            self.message_user(request, "Select at most one version per workflow to restore.", messages.ERROR)
            return
        for version in versions:
            self._restore(request, version)

    def restore_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """POST from the "Restore this version" button on the version page."""
        version = self.get_object(request, unquote(object_id))
        if version is None:
            raise Http404("No such version.")
        if request.method != "POST" or not self.has_restore_permission(request):
            raise PermissionDenied
        if self._restore(request, version):
            return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[version.workflow_id]))
        return HttpResponseRedirect(reverse("admin:workflows_workflowversion_change", args=[version.pk]))


# --- Executions ---------------------------------------------------------------


class StepExecutionDisplay:
    """Read-only columns shared by the step-execution inline and its own admin."""

    @admin.display(description="status", ordering="status")
    def badge(self, obj: WorkflowStepExecution) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="duration")
    def duration(self, obj: WorkflowStepExecution) -> str:
        return format_duration(obj.duration_ms)

    @admin.display(description="input")
    def pretty_input(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.input)

    @admin.display(description="output")
    def pretty_output(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.output)

    @admin.display(description="error")
    def pretty_error(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.error)


class StepExecutionInline(StepExecutionDisplay, admin.TabularInline):
    model = WorkflowStepExecution
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("step_order",)
    fields = (
        "step_order", "step_name", "step_type", "badge", "retry_count", "duration",
        "pretty_input", "pretty_output", "pretty_error",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest):
        # A MAP step's items (up to thousands) are listed under Step executions, not here.
        return super().get_queryset(request).filter(item_index__isnull=True)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NeedsAttentionFilter(admin.SimpleListFilter):
    """Runs on the needs-attention list (``attention_selectors``), by reason."""

    title = "needs attention"
    parameter_name = "attention"
    ANY = "any"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(self.ANY, "Any reason"), *((r.value, r.label) for r in EXECUTION_REASONS)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        if self.value() == self.ANY:
            return executions_needing_attention(queryset)
        if self.value() in EXECUTION_REASONS:
            return executions_needing_attention(queryset, reason=self.value())
        return None


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id", "workflow", "badge", "trigger_type", "created_at", "duration", "version_number", "page_link",
    )
    list_display_links = ("id",)
    list_filter = (NeedsAttentionFilter, "status", "workflow", "trigger_type", "created_at")
    list_select_related = ("workflow", "version")
    search_fields = ("id", "workflow__name", "error__message", "idempotency_key")
    date_hierarchy = "created_at"
    actions = ("cancel_executions", "retry_executions", "dismiss_executions")
    inlines = (StepExecutionInline,)
    fieldsets = (
        (None, {"fields": (
            "id", "page_link", "workflow_link", "version_link", "badge", "trigger_type", "trigger", "started_by",
            "retry_of_link", "idempotency_key", "attention_dismissed_at", "attention_dismissed_by",
        )}),
        ("Timing", {"fields": ("created_at", "started_at", "completed_at", "duration", "deadline_at", "enqueued_at",
                               "event_dispatched_at")}),
        ("Data", {"fields": (
            "pretty_input", "pretty_output", "pretty_error", "pretty_metadata", "pretty_tokens", "pretty_warnings",
        )}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowExecution]:
        # Annotated so the duration column sorts in SQL.
        return super().get_queryset(request).annotate(
            run_time=ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())
        )

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Cancel / retry: staff allowed to change executions (superusers always are)."""
        return request.user.has_perm("workflows.change_workflowexecution")

    # -- columns and fields

    @admin.display(description="status", ordering="status")
    def badge(self, obj: WorkflowExecution) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="duration", ordering="run_time")
    def duration(self, obj: WorkflowExecution) -> str:
        if obj.started_at and not obj.completed_at:
            return "running"
        return format_duration(obj.duration_ms)

    @admin.display(description="version", ordering="version__number")
    def version_number(self, obj: WorkflowExecution) -> str:
        return f"v{obj.version.number}"

    @admin.display(description="page")
    def page_link(self, obj: WorkflowExecution) -> SafeString | str:
        return format_html('<a href="{}">Execution page</a>', reverse("executions:detail", args=[obj.pk]))

    @admin.display(description="workflow")
    def workflow_link(self, obj: WorkflowExecution) -> SafeString | str:
        return admin_link(obj.workflow)

    @admin.display(description="version")
    def version_link(self, obj: WorkflowExecution) -> SafeString | str:
        return admin_link(obj.version, f"v{obj.version.number}")

    @admin.display(description="retry of")
    def retry_of_link(self, obj: WorkflowExecution) -> SafeString | str:
        return admin_link(obj.retry_of, obj.retry_of_id)

    @admin.display(description="input")
    def pretty_input(self, obj: WorkflowExecution) -> SafeString | str:
        return pretty_json(obj.input)

    @admin.display(description="output")
    def pretty_output(self, obj: WorkflowExecution) -> SafeString | str:
        return pretty_json(obj.output)

    @admin.display(description="error")
    def pretty_error(self, obj: WorkflowExecution) -> SafeString | str:
        return pretty_json(obj.error)

    @admin.display(description="metadata")
    def pretty_metadata(self, obj: WorkflowExecution) -> SafeString | str:
        return pretty_json(obj.metadata)

    @admin.display(description="aggregate tokens")
    def pretty_tokens(self, obj: WorkflowExecution) -> SafeString | str:
        return pretty_json(obj.aggregate_tokens)

    @admin.display(description="warnings")
    def pretty_warnings(self, obj: WorkflowExecution) -> SafeString | str:
        return pretty_json(obj.warnings)

    # -- actions: thin wrappers around the execution services

    @admin.action(description="Cancel selected executions", permissions=["operate"])
    def cancel_executions(self, request: HttpRequest, queryset: QuerySet[WorkflowExecution]) -> None:
        from .services.executions import execution_cancel  # the engine loads only when an action runs

        for execution in queryset:
            try:
                execution_cancel(execution=execution, user=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"Execution {execution.id}: {exc.message}", messages.WARNING)
            else:
                self.message_user(request, f"Execution {execution.id}: cancelled.", messages.SUCCESS)

    @admin.action(description="Retry from the failed step", permissions=["operate"])
    def retry_executions(self, request: HttpRequest, queryset: QuerySet[WorkflowExecution]) -> None:
        from .services.executions import execution_retry

        for execution in queryset:
            try:
                retry = execution_retry(execution=execution, user=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"Execution {execution.id}: {exc.message}", messages.WARNING)
            else:
                self.message_user(
                    request,
                    format_html("Execution {}: retried as {}.", execution.id, admin_link(retry, retry.id)),
                    messages.SUCCESS,
                )

    @admin.action(description="Dismiss from needs attention", permissions=["operate"])
    def dismiss_executions(self, request: HttpRequest, queryset: QuerySet[WorkflowExecution]) -> None:
        from .services.attention import execution_dismiss

        dismiss_each(self, request, queryset, execution_dismiss, "execution", "Execution")


def dismiss_each(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, dismiss,
                 argument: str, noun: str) -> None:
    """The admin's dismiss actions: one message per row (refusals as warnings)."""
    for obj in queryset:
        try:
            dismiss(user=request.user, **{argument: obj})
        except ApplicationError as exc:
            model_admin.message_user(request, f"{noun} {obj.pk}: {exc.message}", messages.WARNING)
        else:
            model_admin.message_user(request, f"{noun} {obj.pk}: dismissed.", messages.SUCCESS)


@admin.register(WorkflowStepExecution)
class WorkflowStepExecutionAdmin(StepExecutionDisplay, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id", "execution_link", "step_order", "step_name", "item_index", "step_type", "badge", "retry_count",
        "attempt", "duration", "started_at",
    )
    list_filter = ("status", "step_type", "started_at")
    list_select_related = ("execution", "execution__workflow")
    search_fields = ("execution__id", "step_name")
    fieldsets = (
        (None, {"fields": (
            "id", "execution_link", "step", "step_order", "step_name", "item_index", "step_type", "badge",
            "retry_count", "attempt", "lost_attempts", "worker", "reused_from",
        )}),
        ("Timing", {"fields": ("created_at", "available_at", "started_at", "completed_at", "duration",
                               "lease_expires_at")}),
        ("Data", {"fields": (
            "pretty_input", "pretty_output", "pretty_outputs", "pretty_error", "pretty_model_outputs",
            "pretty_tokens", "pretty_warnings", "pretty_retry_config",
        )}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    @admin.display(description="execution", ordering="execution__created_at")
    def execution_link(self, obj: WorkflowStepExecution) -> SafeString | str:
        return admin_link(obj.execution, f"{obj.execution.workflow} · {obj.execution_id}")

    @admin.display(description="outputs (multi-model)")
    def pretty_outputs(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.outputs)

    @admin.display(description="model outputs")
    def pretty_model_outputs(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.model_outputs)

    @admin.display(description="tokens")
    def pretty_tokens(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.tokens)

    @admin.display(description="warnings")
    def pretty_warnings(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.warnings)

    @admin.display(description="retry config (snapshot)")
    def pretty_retry_config(self, obj: WorkflowStepExecution) -> SafeString | str:
        return pretty_json(obj.retry_config)


# --- HTTP credentials -----------------------------------------------------------------


class HttpCredentialForm(forms.ModelForm):
    """Header values are write-only: the form never shows them, a blank field keeps them."""

    secret_headers = forms.CharField(
        label="headers (leave blank to keep)", required=False, strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off", "placeholder": "Authorization: Bearer ..."}),
        help_text="One header a line, Name: value. Stored encrypted and never shown again; entering headers "
                  "replaces all the stored ones.",
    )

    class Meta:
        model = HttpCredential
        fields = ("name", "description", "hosts")

    def clean_secret_headers(self) -> dict[str, str] | None:
        text = self.cleaned_data.get("secret_headers") or ""
        if not text.strip():
            if not (self.instance and self.instance.headers_encrypted):
                raise forms.ValidationError("Enter at least one header, e.g. Authorization: Bearer <token>.")
            return None
        headers: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()) or not value.strip():
                raise forms.ValidationError(f"Line {number} is not a header: write Name: value.")
            headers[name.strip()] = value.strip()
        return headers

    def save(self, commit: bool = True) -> HttpCredential:
        credential: HttpCredential = super().save(commit=False)
        if self.cleaned_data.get("secret_headers"):
            credential.set_headers(self.cleaned_data["secret_headers"])
        if commit:
            credential.save()
        return credential


@admin.register(HttpCredential)
class HttpCredentialAdmin(admin.ModelAdmin):
    form = HttpCredentialForm
    list_display = ("name", "hosts", "header_names", "updated_at")
    search_fields = ("name", "hosts", "description")
    readonly_fields = ("header_names", "created_at", "updated_at")
    fields = ("name", "description", "hosts", "header_names", "secret_headers", "created_at", "updated_at")
