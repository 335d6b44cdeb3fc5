"""Forms of the execution and prompt pages: they parse what the browser sends; the
rules stay in the services (``prompt_create`` / ``prompt_update``)."""
from __future__ import annotations

import json
from typing import Any

from django import forms

from promptpilot.common.errors import ApplicationError

from ..models import ExecutionStatus, TriggerType


class ExecutionFilterForm(forms.Form):
    """The executions list's query string. Invalid values are shown next to the filter
    and ignored, never a 500."""

    workflow = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Workflow")
    status = forms.ChoiceField(required=False, label="Status",
                               choices=[("", "Any status"), *ExecutionStatus.choices])
    trigger_type = forms.ChoiceField(required=False, label="Trigger",
                                     choices=[("", "Any trigger"), *TriggerType.choices])
    created_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    created_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, workflows: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workflow"].choices = [("", "All workflows"), *workflows]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end date is before the start date.")
        return data

    def filters(self) -> dict[str, Any]:
        """The valid filters only (an invalid one is dropped and shown as an error)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {name: data.get(name) for name in self.fields if name not in self.errors and data.get(name)}


class ApprovalDecisionForm(forms.Form):
    """An approval's comment and its ``form`` fields, as the browser sends them. Values are
    turned into their JSON types here; ``approval_decide`` validates them against the form."""

    comment = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, fields: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = [f for f in fields if isinstance(f, dict) and isinstance(f.get("name"), str)]
        for field in self.spec:
            kind, required = field.get("type", "STRING"), bool(field.get("required", True))
            label = field["name"] + ("" if required else " (optional)")
            if kind == "BOOLEAN":
                self.fields[f"data_{field['name']}"] = forms.BooleanField(required=False, label=field["name"])
            elif kind == "JSON":
                self.fields[f"data_{field['name']}"] = forms.CharField(
                    required=False, label=label, widget=forms.Textarea(attrs={"rows": 2, "class": "mono"}))
            else:
                self.fields[f"data_{field['name']}"] = forms.CharField(
                    required=False, label=label,
                    widget=forms.NumberInput(attrs={"step": "any"}) if kind == "NUMBER" else forms.TextInput())

    def comment_text(self) -> str:
        return (self.data.get(self.add_prefix("comment")) or "").strip()

    def data_values(self) -> dict[str, Any]:
        """Typed values of the fields filled in (left-out ones absent, so required ones are named)."""
        values: dict[str, Any] = {}
        for field in self.spec:
            name, kind = field["name"], field.get("type", "STRING")
            raw = self.data.get(self.add_prefix(f"data_{name}"))
            if kind == "BOOLEAN":
                values[name] = raw in ("on", "true", "1")
                continue
            if raw in (None, ""):
                continue
            values[name] = _typed(raw, kind)
        return values


def _typed(raw: str, kind: str) -> Any:
    """A typed-in value as JSON would carry it; left as text when it does not parse, so the
    service names the field ("must be a number, got a string")."""
    try:
        if kind == "NUMBER":
            number = float(raw)
            return int(number) if number.is_integer() and "." not in raw and "e" not in raw.lower() else number
        if kind == "JSON":
            return json.loads(raw)
    except ValueError:
        return raw
    return raw


class ModelConfigField(forms.CharField):
    """A JSON object typed into a textarea (``{"provider": "echo", "model": "echo"}``)."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(strip=True, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False) if value else ""
        return value

    def clean(self, value: Any) -> dict[str, Any]:
        text = super().clean(value)
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}."
            ) from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError('Expected a JSON object, e.g. {"provider": "echo", "model": "echo"}.')
        return parsed


class PromptForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="A name to recognise the prompt by.",
                           widget=forms.TextInput(attrs={"autofocus": True}))
    template = forms.CharField(
        strip=False, widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        help_text="Jinja2 (sandboxed): {{ input.<variable> }}, {{ steps.<name>.output }}, {{ trigger.payload }}.",
    )
    system = forms.CharField(required=False, strip=False, label="System prompt",
                             widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                             help_text="Optional; Jinja2 too.")
    model_config = ModelConfigField(
        label="Default model",
        help_text='Optional JSON, e.g. {"provider": "echo", "model": "echo"} or '
                  '{"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.2}.',
    )


def form_add_service_error(form: forms.Form, exc: ApplicationError) -> None:
    """A service's refusal on ``form``: the message on top, field errors next to the
    fields they name (``model_config.provider`` → ``model_config``)."""
    errors = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
    placed = False
    for key, messages in (errors or {}).items():
        field = str(key).split(".", 1)[0]
        if field not in form.fields:
            continue
        for message in messages if isinstance(messages, list | tuple) else [messages]:
            form.add_error(field, str(message))
            placed = True
    if not placed:
        form.add_error(None, exc.message)
