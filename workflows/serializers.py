"""API shapes of the workflows domain. Input serializers only check types and shapes;
business rules (definition validity, prompt ownership) live in the services."""
from __future__ import annotations

import math
from typing import Any

from django.db.models import Max
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from promptpilot.common.fields import StrictBooleanField, StrictCharField, StrictIntegerField
from promptpilot.common.json_text import lone_surrogate

from .models import (
    Prompt,
    StepExecutionStatus,
    StepType,
    TriggerType,
    VariableType,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVariable,
    WorkflowVersion,
)

MAX_DB_INT = 2**31 - 1
_MAX_JSON_DEPTH = 64


def _storable_json_problem(value: Any, depth: int = 0) -> str | None:
    """Why PostgreSQL's jsonb would refuse ``value`` (or None): it stores neither
    \\u0000 nor non-finite numbers, and very deep nesting is a denial-of-service tool."""
    if depth > _MAX_JSON_DEPTH:
        return f"nested deeper than {_MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a \\u0000 character"
        char = lone_surrogate(value)
        return f"contains a lone UTF-16 surrogate (\\u{ord(char):04x}); send the character itself" if char else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "contains a number that is not finite"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _storable_json_problem(key, depth + 1) or _storable_json_problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _storable_json_problem(item, depth + 1)
            if problem:
                return problem
    return None


def validate_storable_json(value: Any) -> None:
    problem = _storable_json_problem(value)
    if problem:
        raise serializers.ValidationError(f"This value {problem}; the database cannot store it.")


class AnyJSONField(serializers.JSONField):
    """Any JSON value the database can store."""

    def __init__(self, **kwargs):
        kwargs.setdefault("validators", []).append(validate_storable_json)
        super().__init__(**kwargs)


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(AnyJSONField):
    """A JSON object (``{...}``); null counts as ``{}`` when allowed."""

    def run_validation(self, data=serializers.empty):
        value = super().run_validation(data)
        return {} if value is None else value

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError(f"Expected a JSON object, got {_json_type(value)}.")
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class _WholeItemsListField(serializers.ListField):
    """A list whose items are validated by a standalone serializer.

    Nested serializers inherit ``partial`` from a PATCH, which would make every item
    field optional; a replaced list must be complete, so items are checked on their own.
    """

    item_serializer: type[serializers.Serializer]
    max_items = 200

    def to_internal_value(self, data):
        if isinstance(data, (str, dict)) or not hasattr(data, "__iter__"):
            self.fail("not_a_list", input_type=type(data).__name__)
        data = list(data)
        if len(data) > self.max_items:
            raise serializers.ValidationError(f"At most {self.max_items} items are allowed; got {len(data)}.")
        items = self.item_serializer(data=data, many=True)
        if not items.is_valid():
            raise serializers.ValidationError(items.errors)
        return [dict(item) for item in items.validated_data]


# --- prompts -------------------------------------------------------------------

class PromptInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    template = StrictCharField(trim_whitespace=False, max_length=100_000)
    system = StrictCharField(trim_whitespace=False, allow_blank=True, required=False, max_length=100_000)
    model_config = JSONObjectField(required=False, allow_null=True, help_text='e.g. {"provider": "echo", "model": "echo"}')


class PromptOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "name", "template", "system", "model_config", "created_at", "updated_at"]
        read_only_fields = fields


# --- workflows -----------------------------------------------------------------

class VariableInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100)
    type = serializers.ChoiceField(choices=VariableType.choices, default=VariableType.STRING)
    required = StrictBooleanField(default=True)
    default = AnyJSONField(required=False, allow_null=True, default=None)
    sample = AnyJSONField(required=False, allow_null=True, default=None)
    description = StrictCharField(allow_blank=True, required=False, default="", max_length=10_000)


class StepInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100)
    order = StrictIntegerField(
        min_value=0, max_value=MAX_DB_INT, required=False, allow_null=True, default=None,
        help_text="Steps run by ascending order. Left out: the step's position in the list (1, 2, ...).",
    )
    type = serializers.ChoiceField(choices=StepType.choices)
    prompt = StrictIntegerField(
        min_value=1, required=False, allow_null=True, default=None, help_text="Id of one of your prompts (PROMPT steps)."
    )
    config = JSONObjectField(required=False, allow_null=True, default=dict)
    retry_config = JSONObjectField(required=False, allow_null=True, default=dict)
    on_error = StrictCharField(max_length=120, required=False, default="fail")
    timeout_seconds = StrictIntegerField(min_value=1, max_value=MAX_DB_INT, required=False, allow_null=True, default=None)


@extend_schema_field(VariableInputSerializer(many=True))
class VariablesField(_WholeItemsListField):
    item_serializer = VariableInputSerializer


@extend_schema_field(StepInputSerializer(many=True))
class StepsField(_WholeItemsListField):
    item_serializer = StepInputSerializer


class WorkflowInputSerializer(serializers.Serializer):
    """Create and update. On update a left-out field keeps its value; ``variables`` and
    ``steps``, when given, replace the whole list."""

    name = StrictCharField(max_length=200)
    description = StrictCharField(allow_blank=True, required=False, max_length=100_000)
    is_active = StrictBooleanField(required=False)
    max_concurrent_executions = StrictIntegerField(
        min_value=1, max_value=MAX_DB_INT, required=False, allow_null=True,
        help_text="At most this many runs at once; null means no limit.",
    )
    concurrency_counts_waiting = StrictBooleanField(
        required=False,
        help_text="Whether WAITING runs (approvals, delays) take a max_concurrent_executions slot (default false).",
    )
    timeout_seconds = StrictIntegerField(
        min_value=1, max_value=MAX_DB_INT, required=False, allow_null=True,
        help_text="Whole-run limit in seconds, waiting time included; null means no limit.",
    )
    variables = VariablesField(required=False, help_text="Replaces all variables when given.")
    steps = StepsField(required=False, help_text="Replaces all steps when given.")
    note = StrictCharField(
        max_length=200, required=False, allow_blank=True, write_only=True,
        help_text="Note recorded on the version this change creates.",
    )


class VariableOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowVariable
        fields = ["name", "type", "required", "default", "sample", "description"]
        read_only_fields = fields


class StepOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowStep
        fields = ["id", "name", "order", "type", "prompt", "config", "retry_config", "on_error", "timeout_seconds"]
        read_only_fields = fields


class WorkflowOutputSerializer(serializers.ModelSerializer):
    variables = VariableOutputSerializer(many=True, read_only=True)
    steps = StepOutputSerializer(many=True, read_only=True)
    version = serializers.SerializerMethodField(help_text="Number of the latest version (null before the first).")

    class Meta:
        model = Workflow
        fields = [
            "id", "name", "description", "is_active", "max_concurrent_executions", "concurrency_counts_waiting",
            "timeout_seconds", "version", "variables", "steps", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_version(self, obj: Workflow) -> int | None:
        if hasattr(obj, "latest_version_number"):
            return obj.latest_version_number
        return obj.versions.aggregate(n=Max("number"))["n"]


class WorkflowVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    definition = serializers.JSONField(read_only=True)

    class Meta:
        model = WorkflowVersion
        fields = ["number", "created_at", "note", "created_by", "definition"]
        read_only_fields = fields


# --- runs ----------------------------------------------------------------------

class ExecuteInputSerializer(serializers.Serializer):
    input = JSONObjectField(required=False, allow_null=True, default=dict, help_text="Values for the workflow's variables.")


class TriggerContextSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=TriggerType.choices, default=TriggerType.MANUAL)
    payload = AnyJSONField(required=False, allow_null=True, default=None)


class PreviewInputSerializer(serializers.Serializer):
    input = JSONObjectField(required=False, allow_null=True, default=dict)
    use_sample_data = StrictBooleanField(
        required=False, default=False,
        help_text="Fill inputs from each variable's sample (values in input still win).",
    )
    trigger = TriggerContextSerializer(required=False, help_text="What templates see as trigger.type / trigger.payload.")
    dry_run_models = StrictBooleanField(
        required=False, default=False,
        help_text="Call no provider: each model call is an estimate from the rendered prompt (steps marked dry_run).",
    )
    until = StrictCharField(
        required=False, allow_null=True, default=None,
        help_text="Stop after this step (its name): a prefix or single-step test run.",
    )
    steps_output = JSONObjectField(
        required=False, allow_null=True, default=dict,
        help_text='{"<step name>": output}: these steps are not run; their output stands in (status PROVIDED).',
    )
    from_execution = serializers.UUIDField(
        required=False, allow_null=True, default=None,
        help_text="Id of a past run of this workflow: its input is used (values in input still win).",
    )
    approvals = serializers.DictField(
        child=serializers.BooleanField(), required=False, allow_null=True, default=dict,
        help_text='{"<APPROVAL step name>": true | false}: how each approval is answered (default: approved, '
                  "with a warning). DELAY steps are skipped with a warning.",
    )


class TokenCountSerializer(serializers.Serializer):
    input = serializers.IntegerField()
    output = serializers.IntegerField()
    total = serializers.IntegerField()


class PreviewTokenEstimateSerializer(TokenCountSerializer):
    estimated = serializers.BooleanField()


class PreviewStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    status = serializers.CharField(help_text="COMPLETED, FAILED, SKIPPED, or PROVIDED (output from steps_output).")
    duration_ms = serializers.IntegerField(allow_null=True)
    input = serializers.JSONField(allow_null=True)
    output = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField())
    token_estimate = PreviewTokenEstimateSerializer()
    cost_estimate_usd = serializers.FloatField(allow_null=True, help_text="Null when a model used has no price.")
    dry_run = serializers.BooleanField(help_text="The model call was replaced by an estimate.")


class PreviewOutputSerializer(serializers.Serializer):
    """Documentation only: the preview service builds this dict itself."""

    status = serializers.CharField()
    steps = PreviewStepSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    token_estimate = PreviewTokenEstimateSerializer()
    cost_estimate_usd = serializers.FloatField(allow_null=True, help_text="Null when a model used has no price.")
    dry_run = serializers.BooleanField()
    output = serializers.JSONField(allow_null=True)
    duration_ms = serializers.IntegerField()


class StepExecutionSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="step_name", read_only=True)
    order = serializers.IntegerField(source="step_order", read_only=True)
    type = serializers.ChoiceField(choices=StepType.choices, source="step_type", read_only=True)
    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)
    waiting_until = serializers.SerializerMethodField(
        help_text="WAITING steps: when the wait ends by itself (a delay's time, an approval's timeout); else null.")
    item_index = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="A MAP step's item row: which item (0-based); else null.")
    items = serializers.SerializerMethodField(
        help_text="MAP steps: how many items are in each status (total, completed, failed, ...) and url, the "
                  "page of item rows (GET /api/executions/{id}/steps/{name}/items); else null.")

    class Meta:
        model = WorkflowStepExecution
        fields = [
            "id", "name", "order", "type", "status", "input", "output", "outputs", "error", "retry_count",
            "retry_config", "model_outputs", "tokens", "warnings", "attempt", "started_at", "completed_at",
            "duration_ms", "waiting_until", "item_index", "items",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_items(self, obj: WorkflowStepExecution) -> dict[str, Any] | None:
        if obj.step_type != StepType.MAP or obj.item_index is not None:
            return None
        from .selectors import item_counts

        return {**item_counts(obj), "url": f"/api/executions/{obj.execution_id}/steps/{obj.step_name}/items"}

    def get_waiting_until(self, obj: WorkflowStepExecution) -> str | None:
        if obj.status != StepExecutionStatus.WAITING or obj.available_at is None:
            return None
        return obj.available_at.isoformat()

    def to_representation(self, instance: WorkflowStepExecution) -> dict[str, Any]:
        data = super().to_representation(instance)
        if (instance.status == StepExecutionStatus.WAITING and instance.step_type == StepType.APPROVAL
                and isinstance(data.get("output"), dict)):
            # The signed one-use link, for the owner's eyes only (only they read this): made
            # on the fly, never stored or logged.
            from .services.approvals import approval_url

            request = self.context.get("request")
            base = request.build_absolute_uri("/") if request is not None else ""  # "": a path
            data["output"] = {**data["output"], "approval_url": approval_url(instance, base_url=base)}
        return data


class ApprovalDecisionSerializer(serializers.Serializer):
    step = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                 help_text="The APPROVAL step to decide (default: the one waiting).")
    comment = serializers.CharField(required=False, allow_blank=True, max_length=10_000, default="")
    data = serializers.JSONField(required=False, default=None, help_text="Values of the step's form fields.")


class ApprovalLinkOpenSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=1000, help_text="The part of the approval link after #.")


class ApprovalLinkDecisionSerializer(ApprovalLinkOpenSerializer):
    approved = serializers.BooleanField()
    comment = serializers.CharField(required=False, allow_blank=True, max_length=10_000, default="")
    data = serializers.JSONField(required=False, default=None)
    name = serializers.CharField(required=False, allow_blank=True, max_length=100, default="",
                                 help_text="Who decides (recorded as decided_by \"link: <name>\").")


class ApprovalLinkSerializer(serializers.Serializer):
    """What a signed link shows: the message, the form and the deadline; nothing else of the run."""

    workflow = serializers.CharField()
    step = serializers.CharField()
    message = serializers.CharField()
    form = serializers.JSONField()
    expires_at = serializers.CharField(allow_null=True)
    status = serializers.CharField()


class ExecutionSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number", read_only=True, help_text="Version number the run follows.")
    workflow_name = serializers.CharField(source="workflow.name", read_only=True)
    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = WorkflowExecution
        fields = [
            "id", "workflow", "workflow_name", "version", "trigger", "trigger_type", "status", "input", "output",
            "error", "metadata", "aggregate_tokens", "warnings", "idempotency_key", "created_at", "started_at",
            "completed_at", "duration_ms", "retry_of", "parent_execution",
        ]
        read_only_fields = fields


class ExecutionDetailSerializer(ExecutionSerializer):
    steps = StepExecutionSerializer(source="step_executions", many=True, read_only=True)

    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "steps"]
        read_only_fields = fields
