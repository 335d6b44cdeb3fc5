"""Forms of the trigger pages. Like the API's input serializers they check types and
shapes only (JSON parses, is an object); the rules (ownership, config per type,
immutability) live in the services, whose errors ``form_add_service_error`` puts on
the form."""
from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from rest_framework import serializers

from promptpilot.common.errors import ApplicationError
from workflows.serializers import validate_storable_json

from .models import TriggerKind
from .serializers import MAX_GRACE_SECONDS

# Shown under the config box; one example per type (kept in step with docs/TRIGGERS.md).
CONFIG_HELP: dict[str, dict[str, str]] = {
    TriggerKind.MANUAL: {
        "summary": "Started by the Execute button on the trigger page or by POST /api/triggers/{id}/execute.",
        "example": "{}",
    },
    TriggerKind.WEBHOOK: {
        "summary": "Signed POSTs to /api/webhooks/{id}. Body keys named like the workflow's variables become "
                   "inputs; input_mapping (optional) computes inputs from the payload.",
        "example": '{"input_mapping": {"customer": "payload.customer.name"}}',
    },
    TriggerKind.API: {
        "summary": "POST /api/triggers/{id}/execute with the X-API-Key header; rate_limit is optional.",
        "example": '{"rate_limit": "60/min"}',
    },
    TriggerKind.SCHEDULED: {
        "summary": "Runs on a cron schedule (croniter semantics) in a time zone, with fixed inputs. overlap: skip "
                   "(default: no run while the previous one is going), allow or buffer_one; pause_after_failures: "
                   "disable after N failed runs in a row.",
        "example": '{"cron": "0 9 * * 1-5", "timezone": "Europe/Paris", "input": {"customer": "weekly"}, '
                   '"overlap": "skip"}',
    },
    TriggerKind.EVENT: {
        "summary": "Runs when a platform event matches: execution.completed, execution.failed (attach an error "
                   "workflow this way) or your own events sent to POST /api/events/. filter: payload keys to "
                   "required values.",
        "example": '{"event": "execution.failed", "filter": {"workflow": 12}}',
    },
}

GRACE_CHOICES = [
    (0, "Stop accepting the old secret now"),
    (3600, "Keep accepting the old secret for 1 hour"),
    (24 * 3600, "Keep accepting the old secret for 24 hours"),
    (MAX_GRACE_SECONDS, "Keep accepting the old secret for 7 days"),
]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(text: str, *, label: str) -> dict[str, Any]:
    """``text`` as a JSON object ({} when blank). Raises forms.ValidationError."""
    if not (text or "").strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            f"{label} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except ValueError as exc:
        raise forms.ValidationError(f"{label} is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise forms.ValidationError(f'{label} must be a JSON object such as {{"key": "value"}}.')
    try:
        validate_storable_json(value)
    except serializers.ValidationError as exc:
        raise forms.ValidationError(f"{label}: {' '.join(str(d) for d in exc.detail)}") from None
    return value


def form_add_service_error(form: forms.Form, exc: ApplicationError) -> None:
    """Show a service's refusal on ``form``: the message on top, field errors beside
    the fields they name (``config.input_mapping.x`` → ``config``)."""
    form.add_error(None, exc.message)
    errors = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
    for key, messages in (errors or {}).items():
        field = str(key).split(".", 1)[0]
        if field not in form.fields:
            continue
        for message in messages if isinstance(messages, list | tuple) else [messages]:
            if str(message) != exc.message:
                form.add_error(field, str(message))


class ConfigField(forms.CharField):
    """A JSON object typed into a textarea; cleaned to a dict."""

    widget = forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "mono"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(strip=False, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return value

    def clean(self, value: Any) -> dict[str, Any]:
        return parse_json_object(super().clean(value), label="Config")


class TriggerCreateForm(forms.Form):
    workflow = forms.TypedChoiceField(coerce=int, help_text="The workflow this trigger starts (one of yours).")
    type = forms.ChoiceField(choices=TriggerKind.choices, help_text="Fixed after creation.")
    name = forms.CharField(max_length=200, help_text="A label for people.")
    is_active = forms.BooleanField(required=False, initial=True, label="Active",
                                   help_text="Inactive triggers start nothing.")
    config = ConfigField(help_text="A JSON object; see the examples per type below.")

    def __init__(self, *args: Any, workflows: list[tuple[int, str]], available_types: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workflow"].choices = [("", "— choose a workflow —"), *workflows]
        if available_types is not None:
            # Types the services do not take yet stay listed (so the choice is visible)
            # but say so; choosing one still reaches the service, which explains.
            self.fields["type"].choices = [
                (value, label if value in available_types else f"{label} (not available yet)")
                for value, label in TriggerKind.choices
            ]


class TriggerEditForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="A label for people.")
    is_active = forms.BooleanField(required=False, label="Active", help_text="Inactive triggers start nothing.")
    config = ConfigField(help_text="A JSON object; see the example for this type below.")


class TriggerExecuteForm(forms.Form):
    # A fresh value per rendered form, sent as the firing's idempotency key: a double
    # click or a re-posted form starts one run, not two.
    submission = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    input = forms.CharField(
        required=False, strip=False, label="Input (JSON)",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "mono",
                                     "placeholder": '{"customer": "Ada"}'}),
        help_text="Values for the workflow's variables. The whole body {\"input\": …} is trigger.payload.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["submission"].initial = uuid.uuid4().hex

    def clean_submission(self) -> str | None:
        value = self.cleaned_data.get("submission") or ""
        return f"page-{value}" if value.isalnum() else None

    def clean_input(self) -> dict[str, Any]:
        return parse_json_object(self.cleaned_data.get("input", ""), label="Input")


class TriggerRotateForm(forms.Form):
    grace_seconds = forms.TypedChoiceField(
        coerce=int, choices=GRACE_CHOICES, required=False, empty_value=0, label="Old secret",
        help_text="WEBHOOK only: lets senders switch to the new secret without losing deliveries.",
    )
