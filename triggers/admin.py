"""Admin for triggers and their invocations: find, filter, inspect.

View-only on purpose: creating a trigger, rotating its secret or toggling it must go
through the trigger services (secrets are shown once, schedules are synced to beat),
which the API exposes. Secret material never reaches these pages.
"""
from __future__ import annotations

import re
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import SafeString, mark_safe

from workflows.admin import EMPTY, ReadOnlyAdminMixin, admin_link, changelist_link, counted, dismiss_each, pretty_json
from workflows.attention_selectors import invocations_needing_attention

from .models import TriggerInvocation, WorkflowTrigger
from .services.schedules import periodic_task_name, schedule_next_runs

# Config keys and model fields whose values are secrets (or hashes/ciphertexts of them).
SECRET_NAME = re.compile(r"secret|api_?key|password|token|hash|encrypted|signing", re.IGNORECASE)
REDACTED = "••• redacted •••"


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking key's value replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if SECRET_NAME.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


class SecretFieldsHiddenMixin:
    """Leave out model fields that hold secrets, whatever fields the model grows."""

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        excluded = tuple(super().get_exclude(request, obj) or ())
        secret_fields = tuple(f.name for f in self.model._meta.concrete_fields if SECRET_NAME.search(f.name))
        return excluded + secret_fields


@admin.register(WorkflowTrigger)
class WorkflowTriggerAdmin(SecretFieldsHiddenMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("name", "workflow", "type", "is_active", "next_run_at", "last_triggered_at", "created_at")
    list_filter = ("type", "is_active", "created_at")
    list_select_related = ("workflow",)
    search_fields = ("id", "name", "workflow__name")
    date_hierarchy = "created_at"
    exclude = ("config",)
    readonly_fields = ("id", "workflow_link", "pretty_config", "next_five_runs", "periodic_task_link",
                       "invocations_link", "created_at")

    @admin.display(description="workflow")
    def workflow_link(self, obj: WorkflowTrigger) -> SafeString | str:
        return admin_link(obj.workflow)

    @admin.display(description="config")
    def pretty_config(self, obj: WorkflowTrigger) -> SafeString | str:
        return pretty_json(redact(obj.config))

    @admin.display(description="next five runs")
    def next_five_runs(self, obj: WorkflowTrigger) -> SafeString | str:
        runs = schedule_next_runs(trigger=obj)
        if not runs:
            return obj.paused_reason or EMPTY
        return format_html_join(mark_safe("<br>"), "{} &nbsp;({} UTC)", ((r["local"], r["utc"]) for r in runs))

    @admin.display(description="periodic task")
    def periodic_task_link(self, obj: WorkflowTrigger) -> SafeString | str:
        from django_celery_beat.models import PeriodicTask

        return admin_link(PeriodicTask.objects.filter(name=periodic_task_name(obj.pk)).first())

    @admin.display(description="invocations")
    def invocations_link(self, obj: WorkflowTrigger) -> SafeString:
        return changelist_link(TriggerInvocation, counted(obj.invocations.count(), "invocation"), trigger__id__exact=obj.pk)


class InvocationNeedsAttentionFilter(admin.SimpleListFilter):
    """Rejected deliveries (REJECTED / INVALID_INPUT) not yet dismissed (``attention_selectors``)."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("TRIGGER_REJECTED", "Rejected by a trigger")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        return invocations_needing_attention(queryset) if self.value() == "TRIGGER_REJECTED" else None


@admin.register(TriggerInvocation)
class TriggerInvocationAdmin(SecretFieldsHiddenMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "trigger", "trigger_type", "status", "received_at", "verified", "delivery_id",
                    "execution_link")
    list_filter = (InvocationNeedsAttentionFilter, "status", "verified", "trigger__type", "received_at")
    actions = ("dismiss_invocations",)
    list_select_related = ("trigger", "execution")
    search_fields = ("id", "delivery_id", "trigger__name", "execution__id", "verification_error")
    date_hierarchy = "received_at"
    exclude = ("payload",)
    readonly_fields = ("id", "received_at", "trigger_link", "execution_link", "pretty_payload")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TriggerInvocation]:
        return super().get_queryset(request).select_related("trigger__workflow")

    @admin.display(description="type", ordering="trigger__type")
    def trigger_type(self, obj: TriggerInvocation) -> str:
        return obj.trigger.type

    @admin.display(description="trigger")
    def trigger_link(self, obj: TriggerInvocation) -> SafeString | str:
        return admin_link(obj.trigger)

    @admin.display(description="execution")
    def execution_link(self, obj: TriggerInvocation) -> SafeString | str:
        return admin_link(obj.execution, obj.execution_id)

    @admin.display(description="payload")
    def pretty_payload(self, obj: TriggerInvocation) -> SafeString | str:
        return pretty_json(obj.payload)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("triggers.change_triggerinvocation")

    @admin.action(description="Dismiss from needs attention", permissions=["operate"])
    def dismiss_invocations(self, request: HttpRequest, queryset: QuerySet[TriggerInvocation]) -> None:
        from workflows.services.attention import invocation_dismiss

        dismiss_each(self, request, queryset, invocation_dismiss, "invocation", "Invocation")
