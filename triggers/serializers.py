"""API shapes of the triggers domain. Input serializers check types and shapes; rules
(ownership, config per type, immutability) live in the services."""
from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from promptpilot.common.fields import StrictBooleanField, StrictCharField, StrictIntegerField
from workflows.models import ExecutionStatus
from workflows.serializers import ExecutionSerializer, JSONObjectField

from .models import TriggerInvocation, TriggerKind, WorkflowTrigger
from .services.schedules import schedule_next_runs

MAX_DB_INT = 2**63 - 1


# --- input ---------------------------------------------------------------------------

class TriggerCreateInputSerializer(serializers.Serializer):
    workflow = StrictIntegerField(min_value=1, max_value=MAX_DB_INT, help_text="Id of one of your workflows.")
    type = serializers.ChoiceField(choices=TriggerKind.choices, help_text="Fixed after creation.")
    name = StrictCharField(max_length=200)
    is_active = StrictBooleanField(required=False, default=True)
    config = JSONObjectField(
        required=False, allow_null=True,
        help_text='WEBHOOK: {"input_mapping": {"variable": "payload.expression"}}; API: {"rate_limit": "60/min"}; '
                  'MANUAL: {}; EVENT: {"event": "execution.failed", "filter": {"workflow": 12}, "input_mapping": {...}}.',
    )


class TriggerUpdateInputSerializer(serializers.Serializer):
    workflow = StrictIntegerField(min_value=1, max_value=MAX_DB_INT, required=False,
                                        help_text="Immutable: may only repeat the current value.")
    type = serializers.ChoiceField(choices=TriggerKind.choices, required=False,
                                   help_text="Immutable: may only repeat the current value.")
    name = StrictCharField(max_length=200)
    is_active = StrictBooleanField(required=False)
    config = JSONObjectField(required=False, allow_null=True)


MAX_GRACE_SECONDS = 7 * 24 * 3600


class TriggerRotateInputSerializer(serializers.Serializer):
    grace_seconds = StrictIntegerField(
        required=False, default=0, min_value=0, max_value=MAX_GRACE_SECONDS,
        help_text="WEBHOOK only: how long the previous secret is still accepted (default 0: not at all).",
    )


class TriggerExecuteInputSerializer(serializers.Serializer):
    input = JSONObjectField(required=False, allow_null=True, help_text="Values for the workflow's variables.")


# --- output --------------------------------------------------------------------------

class InvocationSerializer(serializers.ModelSerializer):
    class Meta:
        model = TriggerInvocation
        fields = ["id", "received_at", "status", "verified", "verification_error", "error", "delivery_id",
                  "execution", "request_meta"]
        read_only_fields = fields


class InvocationDetailSerializer(InvocationSerializer):
    class Meta(InvocationSerializer.Meta):
        fields = [*InvocationSerializer.Meta.fields, "payload"]
        read_only_fields = fields


class TriggerSerializer(serializers.ModelSerializer):
    workflow_name = serializers.CharField(source="workflow.name", read_only=True)
    webhook_url = serializers.SerializerMethodField(help_text="WEBHOOK: where to POST signed deliveries.")
    api_key_prefix = serializers.SerializerMethodField(help_text="API: the first characters of the current key.")
    previous_secret_expires_at = serializers.SerializerMethodField(
        help_text="WEBHOOK: until when the secret before the last rotation is still accepted (null: it is not)."
    )

    class Meta:
        model = WorkflowTrigger
        fields = ["id", "workflow", "workflow_name", "type", "name", "is_active", "config", "webhook_url",
                  "api_key_prefix", "previous_secret_expires_at", "last_triggered_at", "created_at", "updated_at",
                  "next_run_at", "paused_at", "paused_reason"]
        read_only_fields = fields
        extra_kwargs = {
            "next_run_at": {"help_text": "SCHEDULED: the next time (UTC) it fires; null while inactive or for other "
                                         "types."},
            "paused_at": {"help_text": "SCHEDULED: when pause_after_failures disabled it (null: not paused)."},
            "paused_reason": {"help_text": "SCHEDULED: why it was paused; cleared by enabling it again."},
        }

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_webhook_url(self, trigger: WorkflowTrigger) -> str | None:
        if trigger.type != TriggerKind.WEBHOOK:
            return None
        path = reverse("triggers_api:webhook", kwargs={"trigger_id": trigger.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_previous_secret_expires_at(self, trigger: WorkflowTrigger) -> str | None:
        expires = trigger.previous_secret_expires_at
        if trigger.type != TriggerKind.WEBHOOK or expires is None or expires <= timezone.now():
            return None
        return serializers.DateTimeField().to_representation(expires)

    def get_api_key_prefix(self, trigger: WorkflowTrigger) -> str | None:
        return (trigger.api_key_prefix or None) if trigger.type == TriggerKind.API else None


class TriggerWithSecretSerializer(TriggerSerializer):
    secret = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="The webhook secret (whsec_...) or API key (pp_...): shown this once, never again.",
    )

    class Meta(TriggerSerializer.Meta):
        fields = [*TriggerSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class ByStatusSerializer(serializers.Serializer):
    PENDING = serializers.IntegerField()
    RUNNING = serializers.IntegerField()
    WAITING = serializers.IntegerField()
    COMPLETED = serializers.IntegerField()
    FAILED = serializers.IntegerField()
    CANCELLED = serializers.IntegerField()


class LastExecutionSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=ExecutionStatus.choices)
    created_at = serializers.DateTimeField()


class TriggerMetricsSerializer(serializers.Serializer):
    executions_total = serializers.IntegerField()
    by_status = ByStatusSerializer()
    success_rate = serializers.FloatField(allow_null=True, help_text="COMPLETED / finished; null if none finished.")
    avg_duration_ms = serializers.IntegerField(allow_null=True, help_text="Mean run time of finished runs.")
    last_execution = LastExecutionSerializer(allow_null=True)


class ScheduledRunSerializer(serializers.Serializer):
    utc = serializers.DateTimeField(help_text="The scheduled time in UTC.")
    local = serializers.CharField(help_text="The same instant in the trigger's time zone, ISO 8601 with its offset.")


class TriggerDetailSerializer(TriggerSerializer):
    metrics = serializers.SerializerMethodField()
    recent_invocations = serializers.SerializerMethodField(help_text="The last 10 firings, newest first.")
    next_runs = serializers.SerializerMethodField(
        help_text="SCHEDULED: the next five times it fires (the first is next_run_at); empty while inactive, null "
                  "for other types."
    )

    class Meta(TriggerSerializer.Meta):
        fields = [*TriggerSerializer.Meta.fields, "metrics", "recent_invocations", "next_runs"]
        read_only_fields = fields

    @extend_schema_field(ScheduledRunSerializer(many=True, allow_null=True))
    def get_next_runs(self, trigger: WorkflowTrigger) -> list[dict[str, str]] | None:
        return schedule_next_runs(trigger=trigger)

    @extend_schema_field(TriggerMetricsSerializer)
    def get_metrics(self, trigger: WorkflowTrigger) -> dict[str, Any]:
        return TriggerMetricsSerializer(self.context["metrics"]).data

    @extend_schema_field(InvocationSerializer(many=True))
    def get_recent_invocations(self, trigger: WorkflowTrigger) -> list[dict[str, Any]]:
        return InvocationSerializer(self.context["recent_invocations"], many=True).data


class TriggerFiredSerializer(serializers.Serializer):
    execution_id = serializers.UUIDField(allow_null=True)
    invocation_id = serializers.UUIDField()
    status = serializers.CharField(help_text="ACCEPTED, or DUPLICATE for a repeated delivery id.")


class TriggerExecutedSerializer(TriggerFiredSerializer):
    execution = ExecutionSerializer(allow_null=True)


# --- events (POST /api/events/) ----------------------------------------------------------

class EventEmitInputSerializer(serializers.Serializer):
    name = StrictCharField(
        max_length=100, trim_whitespace=False,
        help_text='Lowercase letters, digits, "_", "." and "-", e.g. "order.created". Names starting with '
                  '"execution." are reserved for the platform.',
    )
    payload = JSONObjectField(
        required=False, allow_null=True,
        help_text='Any JSON object without a top-level "event" key; with "event": name added, it is trigger.payload '
                  "of the runs it starts.",
    )


class EventMatchSerializer(serializers.Serializer):
    trigger_id = serializers.UUIDField()
    invocation_id = serializers.UUIDField(allow_null=True)
    execution_id = serializers.UUIDField(allow_null=True, help_text="The run it started; null if it started none.")
    status = serializers.CharField(
        help_text="ACCEPTED; DUPLICATE for a repeated Idempotency-Key; INVALID_INPUT or REJECTED (see error)."
    )
    error = serializers.CharField(allow_blank=True, help_text="Why no run started, or empty.")


class EventEmittedSerializer(serializers.Serializer):
    event = serializers.CharField(help_text="The event's name.")
    event_id = serializers.CharField(help_text="The Idempotency-Key if one was sent, else a generated id.")
    matched = EventMatchSerializer(many=True, help_text="One entry per EVENT trigger whose event and filter matched.")
