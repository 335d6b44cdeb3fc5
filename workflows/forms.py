"""Forms of the builder's workflow pages (editor, preview, run).

Like the API's input serializers they check types and shapes only (a number is a
number, JSON parses); the rules of a runnable definition live in the services, whose
errors (keyed by paths such as ``steps[1].config.template``) ``definition_errors_to_forms``
puts next to the field they name.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.forms import formset_factory

from promptpilot.common.json_text import lone_surrogate, lone_surrogate_message

from .engine.retry import DEFAULT_RETRY_CONFIG
from .models import StepType, VariableType

OUTPUT_FORMAT_CHOICES = [("text", "Text"), ("json", "JSON (the answer must parse)")]
ON_ERROR_CHOICES = [
    ("fail", "Fail the run (default)"),
    ("continue", "Continue with the default output"),
    ("skip_to", "Skip to a later step"),
]
RETRY_ON_CHOICES = [
    ("transient", "Transient errors (429, 5XX, timeouts, connection errors)"),
    ("invalid_output", "Invalid output (an answer that does not match the output format)"),
]
# Config keys the step form has fields for; any other key is kept in "Other config".
FORM_CONFIG_KEYS = {
    StepType.PROMPT: {"template", "system", "model", "output_format", "default_output"},
    StepType.TRANSFORM: {"template", "output_format", "default_output"},
    StepType.CONDITION: {"expression", "if_true", "if_false", "default_output"},
    StepType.MAP: {"items", "step", "concurrency", "on_item_error", "default_output"},
}
ON_ITEM_ERROR_CHOICES = [
    ("fail", "Fail the step"),
    ("continue", "Continue: the item's output is null (listed in warnings)"),
    ("drop", "Drop the item from the output (listed in warnings)"),
]
MODEL_KEYS = ("provider", "model")


# --- JSON helpers --------------------------------------------------------------------

def json_error_message(label: str, exc: json.JSONDecodeError) -> str:
    return f"{label} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not allowed in JSON", name, 0)


def parse_json(text: str, *, label: str) -> Any:
    """``text`` as JSON (NaN and Infinity refused). Raises forms.ValidationError naming
    the line and column of the first problem."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(json_error_message(label, exc)) from None
    char = lone_surrogate(value)  # "\ud800" parses, but no page or database can hold it
    if char is not None:
        raise forms.ValidationError(f"{label}: {lone_surrogate_message(char)}")
    return value


def parse_json_object(text: str, *, label: str) -> dict[str, Any]:
    if not (text or "").strip():
        return {}
    value = parse_json(text, label=label)
    if not isinstance(value, dict):
        raise forms.ValidationError(f'{label} must be a JSON object such as {{"key": "value"}}.')
    return value


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def typed_value_text(value: Any, var_type: str) -> str:
    """How a variable's default or sample is typed into its box."""
    if value is None:
        return ""
    if var_type == VariableType.STRING and isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def parse_typed_value(text: str | None, var_type: str, *, label: str) -> Any:
    """A value typed for a variable of ``var_type``: strings as typed, the rest as JSON
    (``42``, ``true``, ``{"a": 1}``). Blank is None (not set)."""
    if text is None or text == "":
        return None
    if var_type == VariableType.STRING:
        return text
    if var_type == VariableType.BOOLEAN and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    return parse_json(text.strip(), label=label)


# --- the workflow and its variables ---------------------------------------------------

class WorkflowForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="A label for people.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                  help_text="What the workflow is for; the list page searches it too.")
    is_active = forms.BooleanField(required=False, initial=True, label="Active",
                                   help_text="Inactive workflows cannot be run (previews still work).")
    timeout_seconds = forms.IntegerField(required=False, min_value=1, label="Run timeout (seconds)",
                                         help_text="A run still going after this long fails as Timeout. Empty: no limit.")
    max_concurrent_executions = forms.IntegerField(
        required=False, min_value=1, label="Concurrent runs",
        help_text="At most this many runs at once; extra runs wait PENDING. Empty: no limit.")
    note = forms.CharField(required=False, max_length=200, label="Version note",
                           help_text="Optional: what this change is, shown in the version history.")

    def to_data(self) -> dict[str, Any]:
        data = {key: self.cleaned_data.get(key) for key in
                ("name", "description", "is_active", "timeout_seconds", "max_concurrent_executions")}
        if self.cleaned_data.get("note"):
            data["note"] = self.cleaned_data["note"]
        return data


class VariableForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={
        "class": "mono", "data-role": "variable-name", "spellcheck": "false", "autocomplete": "off",
        "placeholder": "customer_name"}), help_text="Templates use it as {{ input.<name> }}.")
    type = forms.ChoiceField(choices=VariableType.choices, initial=VariableType.STRING)
    required = forms.BooleanField(required=False, initial=True)
    default = forms.CharField(required=False, strip=False,
                              help_text="Used when the input leaves it out. Numbers, booleans and JSON as JSON.")
    sample = forms.CharField(required=False, strip=False, help_text="Example value for previews.")
    description = forms.CharField(required=False)

    @classmethod
    def initial_from(cls, variable: dict[str, Any]) -> dict[str, Any]:
        var_type = variable.get("type") or VariableType.STRING
        return {
            "name": variable.get("name"), "type": var_type, "required": variable.get("required", True),
            "default": typed_value_text(variable.get("default"), var_type),
            "sample": typed_value_text(variable.get("sample"), var_type),
            "description": variable.get("description") or "",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        var_type = data.get("type") or VariableType.STRING
        for key in ("default", "sample"):
            try:
                data[f"{key}_value"] = parse_typed_value(data.get(key), var_type, label=key.capitalize())
            except forms.ValidationError as exc:
                self.add_error(key, exc)
        return data

    def to_definition(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"name": data["name"], "type": data["type"], "required": bool(data.get("required")),
                "default": data.get("default_value"), "sample": data.get("sample_value"),
                "description": data.get("description") or ""}


# --- steps ---------------------------------------------------------------------------

def _mono(rows: int | None = None, **attrs: Any) -> forms.Widget:
    base = {"class": "mono", "spellcheck": "false", **attrs}
    if rows:
        return forms.Textarea(attrs={"rows": rows, **base})
    return forms.TextInput(attrs={"autocomplete": "off", **base})


class StepForm(forms.Form):
    """One step. Which fields apply depends on ``type``; the page shows those only."""

    name = forms.CharField(max_length=100, widget=_mono(**{"data-role": "step-name", "placeholder": "draft"}),
                           help_text="Later steps use its result as {{ steps.<name>.output }}.")
    type = forms.ChoiceField(choices=StepType.choices, initial=StepType.PROMPT,
                             widget=forms.Select(attrs={"data-role": "step-type"}))
    prompt = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Saved prompt",
                                    help_text="Optional: take the template, system prompt and model from a prompt.")
    template = forms.CharField(required=False, strip=False, widget=_mono(8, **{"data-role": "template"}),
                               help_text="Jinja2: {{ input.<variable> }}, {{ steps.<earlier step>.output }}, "
                                         "{{ trigger.payload }}.")
    system = forms.CharField(required=False, strip=False, widget=_mono(3), label="System prompt")
    provider = forms.ChoiceField(required=False, widget=forms.Select(attrs={"data-role": "provider"}),
                                 help_text="Built-in providers and the OpenAI-compatible connections staff added.")
    model = forms.CharField(required=False, max_length=200, label="Model",
                            widget=_mono(list="model-names", placeholder="gpt-4o-mini"))
    model_params = forms.CharField(required=False, strip=False, widget=_mono(2, placeholder='{"temperature": 0.2}'),
                                   label="Model parameters (JSON)",
                                   help_text='Passed to the provider, e.g. {"temperature": 0.2, "max_tokens": 400}; '
                                             'echo takes {"delay_ms": 500}.')
    output_format = forms.ChoiceField(choices=OUTPUT_FORMAT_CHOICES, initial="text", required=False)
    expression = forms.CharField(required=False, widget=_mono(placeholder="steps.draft.output | length > 0"),
                                 help_text="A Jinja2 expression; the step's output is its truth value.")
    if_true = forms.CharField(required=False, initial="continue", widget=_mono(),
                              help_text='"continue", "stop" or "skip_to:<later step>".')
    if_false = forms.CharField(required=False, initial="stop", widget=_mono(),
                               help_text='"continue", "stop" or "skip_to:<later step>".')
    map_items = forms.CharField(required=False, label="Items", widget=_mono(placeholder="input.topics"),
                                help_text="A Jinja2 expression giving the list to go over (at most max_items, "
                                          "default 1,000).")
    map_step = forms.CharField(
        required=False, strip=False, label="Inner step (JSON)",
        widget=_mono(6, placeholder='{"type": "PROMPT", "config": {"template": "Sum up {{ item }}", '
                                    '"model": {"provider": "echo", "model": "echo"}}}'),
        help_text="One PROMPT, TRANSFORM or HTTP step run for each item: {type, config, retry_config}. Its "
                  "templates also see {{ item }} and {{ index }}.")
    map_concurrency = forms.IntegerField(required=False, min_value=1, max_value=1000, label="Concurrency",
                                         help_text="Items running at once (default 10).")
    map_on_item_error = forms.ChoiceField(choices=ON_ITEM_ERROR_CHOICES, initial="fail", required=False,
                                          label="When an item fails")
    on_error = forms.ChoiceField(choices=ON_ERROR_CHOICES, initial="fail", label="On error")
    on_error_target = forms.CharField(required=False, label="Skip to step", widget=_mono(placeholder="step name"))
    default_output = forms.CharField(required=False, strip=False, widget=_mono(2), label="Default output",
                                     help_text='With "continue": the output used when the step fails '
                                               "(JSON; plain text is taken as a string).")
    max_retries = forms.IntegerField(required=False, min_value=0, max_value=100, initial=0, label="Retries")
    backoff_base_seconds = forms.FloatField(required=False, min_value=0, label="Backoff base (s)")
    backoff_max_seconds = forms.FloatField(required=False, min_value=0, label="Backoff max (s)")
    jitter = forms.BooleanField(required=False, initial=True, label="Jitter")
    retry_on = forms.MultipleChoiceField(required=False, choices=RETRY_ON_CHOICES, initial=["transient"],
                                         widget=forms.CheckboxSelectMultiple, label="Retry on")
    timeout_seconds = forms.IntegerField(required=False, min_value=1, label="Attempt timeout (s)",
                                         help_text="Per attempt; empty: the default (120 s for model calls).")
    extra_config = forms.CharField(required=False, strip=False, widget=_mono(3), label="Other config (JSON)",
                                   help_text='Keys without a field here, e.g. {"models": [...], "mode": "fallback"} '
                                             "for several models.")

    def __init__(self, *args: Any, providers: list[str] = (), prompts: list[tuple[int, str]] = (),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = [("", "— choose —"), *[(p, p) for p in providers]]
        self.fields["prompt"].choices = [("", "— none —"), *prompts]

    @classmethod
    def initial_from(cls, step: dict[str, Any]) -> dict[str, Any]:
        """Form values for a stored step (a definition snapshot's or the API's shape)."""
        step_type = step.get("type") or StepType.PROMPT
        config = dict(step.get("config") or {})
        retry = step.get("retry_config") or {}
        prompt = step.get("prompt")
        model = config.get("model") if isinstance(config.get("model"), dict) else {}
        on_error = step.get("on_error") or "fail"
        target = ""
        if on_error.startswith("skip_to:"):
            on_error, target = "skip_to", on_error.split(":", 1)[1]
        extra = {k: v for k, v in config.items() if k not in FORM_CONFIG_KEYS.get(step_type, set())}
        if config.get("model") is not None and not isinstance(config.get("model"), dict):
            extra["model"] = config["model"]
        params = {k: v for k, v in (model or {}).items() if k not in MODEL_KEYS}
        default_output = config.get("default_output")
        return {
            "name": step.get("name"), "type": step_type,
            "prompt": prompt.get("id") if isinstance(prompt, dict) else prompt,
            "template": config.get("template") or "", "system": config.get("system") or "",
            "provider": (model or {}).get("provider") or "", "model": (model or {}).get("model") or "",
            "model_params": json.dumps(params, ensure_ascii=False) if params else "",
            "output_format": config.get("output_format") or "text",
            "expression": config.get("expression") or "",
            "if_true": config.get("if_true") or "continue", "if_false": config.get("if_false") or "stop",
            "map_items": (config.get("items") or "") if step_type == StepType.MAP else "",
            "map_step": pretty_json(config["step"]) if step_type == StepType.MAP and config.get("step") else "",
            "map_concurrency": config.get("concurrency") if step_type == StepType.MAP else None,
            "map_on_item_error": config.get("on_item_error") or "fail",
            "on_error": on_error, "on_error_target": target,
            "default_output": "" if default_output is None else (
                default_output if isinstance(default_output, str) else json.dumps(default_output, ensure_ascii=False)),
            "max_retries": retry.get("max_retries", 0),
            "backoff_base_seconds": retry.get("backoff_base_seconds"),
            "backoff_max_seconds": retry.get("backoff_max_seconds"),
            "jitter": retry.get("jitter", True),
            "retry_on": list(retry.get("retry_on") or DEFAULT_RETRY_CONFIG["retry_on"]),
            "timeout_seconds": step.get("timeout_seconds"),
            "extra_config": pretty_json(extra) if extra else "",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for key, label in (("model_params", "Model parameters"), ("extra_config", "Other config"),
                           ("map_step", "Inner step")):
            try:
                data[f"{key}_value"] = parse_json_object(data.get(key) or "", label=label)
            except forms.ValidationError as exc:
                self.add_error(key, exc)
        if data.get("on_error") == "skip_to" and not (data.get("on_error_target") or "").strip():
            self.add_error("on_error_target", "Name the later step to skip to.")
        return data

    def to_definition(self, order: int) -> dict[str, Any]:
        """The step as ``workflow_create`` / ``workflow_update`` take it."""
        data = self.cleaned_data
        step_type = data["type"]
        config: dict[str, Any] = dict(data.get("extra_config_value") or {})
        if step_type in (StepType.PROMPT, StepType.TRANSFORM):
            if data.get("template"):
                config["template"] = data["template"]
            if data.get("output_format") == "json":
                config["output_format"] = "json"
        if step_type == StepType.PROMPT:
            if data.get("system"):
                config["system"] = data["system"]
            if data.get("provider") or data.get("model"):
                config["model"] = {"provider": data.get("provider") or "", "model": (data.get("model") or "").strip(),
                                   **(data.get("model_params_value") or {})}
        if step_type == StepType.CONDITION:
            config["expression"] = data.get("expression") or ""
            config["if_true"] = (data.get("if_true") or "continue").strip()
            config["if_false"] = (data.get("if_false") or "stop").strip()
        if step_type == StepType.MAP:
            config["items"] = data.get("map_items") or ""
            if data.get("map_step_value"):
                config["step"] = data["map_step_value"]
            if data.get("map_concurrency"):
                config["concurrency"] = data["map_concurrency"]
            if (data.get("map_on_item_error") or "fail") != "fail":
                config["on_item_error"] = data["map_on_item_error"]
        on_error = data.get("on_error") or "fail"
        if on_error == "skip_to":
            on_error = f"skip_to:{data['on_error_target'].strip()}"
        if on_error == "continue" and data.get("default_output"):
            text = data["default_output"]
            try:
                config["default_output"] = json.loads(text)
            except json.JSONDecodeError:
                config["default_output"] = text
        retry: dict[str, Any] = {}
        if data.get("max_retries"):
            retry = {"max_retries": data["max_retries"], "jitter": bool(data.get("jitter")),
                     "retry_on": list(data.get("retry_on") or [])}
            for key in ("backoff_base_seconds", "backoff_max_seconds"):
                value = data.get(key)
                if value is not None:
                    retry[key] = int(value) if float(value).is_integer() else value
        return {
            "name": data["name"], "order": order, "type": step_type,
            "prompt": data.get("prompt") if step_type == StepType.PROMPT else None,
            "config": config, "retry_config": retry, "on_error": on_error,
            "timeout_seconds": data.get("timeout_seconds"),
        }


VariableFormSet = formset_factory(VariableForm, extra=0, can_delete=True, can_order=True)
StepFormSet = formset_factory(StepForm, extra=0, can_delete=True, can_order=True)


# --- service errors next to the fields -----------------------------------------------

# A service path's tail (after ``steps[i].``) → the step form's field.
STEP_FIELD_OF = {
    "name": "name", "type": "type", "prompt": "prompt", "prompt.template": "prompt",
    "prompt.model_config": "prompt", "config.template": "template", "config.system": "system",
    "config.model": "model", "config.output_format": "output_format", "config.expression": "expression",
    "config.if_true": "if_true", "config.if_false": "if_false", "config.default_output": "default_output",
    "config.models": "extra_config", "config.mode": "extra_config", "config": "extra_config",
    "config.items": "map_items", "config.step": "map_step", "config.concurrency": "map_concurrency",
    "config.on_item_error": "map_on_item_error",
    "on_error": "on_error", "retry_config": "max_retries", "timeout_seconds": "timeout_seconds",
}
WORKFLOW_FIELDS = {"name", "description", "timeout_seconds", "max_concurrent_executions", "is_active"}


def _split_path(path: str) -> tuple[str, int | None, str]:
    """``steps[1].config.template`` → ("steps", 1, "config.template")."""
    head, _, tail = path.partition(".")
    if "[" in head and head.endswith("]"):
        name, _, index = head[:-1].partition("[")
        if index.isdigit():
            return name, int(index), tail
    return head, None, tail


def _step_field(tail: str) -> str | None:
    while tail:
        if tail in STEP_FIELD_OF:
            return STEP_FIELD_OF[tail]
        if "." not in tail:
            break
        tail = tail.rsplit(".", 1)[0]  # config.model.provider → config.model
    return None


def definition_errors_to_forms(errors: dict[str, Any], *, workflow_form: forms.Form,
                               variable_forms: list[forms.Form], step_forms: list[forms.Form]) -> list[str]:
    """Put each of a service's ``extra.errors`` next to its field. ``variable_forms`` and
    ``step_forms`` are in the order their definitions were sent (the service's indexes).
    Returns the messages no field took (shown on top of the page)."""
    leftovers: list[str] = []
    for path, messages in (errors or {}).items():
        messages = [str(m) for m in (messages if isinstance(messages, list | tuple) else [messages])]
        name, index, tail = _split_path(str(path))
        target: tuple[forms.Form, str | None] | None = None
        if name == "steps" and index is not None and index < len(step_forms):
            target = (step_forms[index], _step_field(tail))
        elif name == "variables" and index is not None and index < len(variable_forms):
            form = variable_forms[index]
            field = tail.split(".", 1)[0]
            target = (form, field if field in form.fields else None)
        elif name in WORKFLOW_FIELDS and not tail:
            target = (workflow_form, name)
        if target is None:
            leftovers.extend(f"{path}: {m}" for m in messages)
            continue
        form, field = target
        for message in messages:
            form.add_error(field, message if field else f"{tail or path}: {message}")
    return leftovers


# --- preview and run inputs -----------------------------------------------------------

def _var_field_name(name: str) -> str:
    return f"var__{name}"


class InputsForm(forms.Form):
    """Inputs for a preview or a run, with one field per variable (form mode) or one
    JSON object (raw JSON mode). Blank fields are left out, so defaults (and samples,
    with "use sample data") apply."""

    MODES = [("form", "Form"), ("json", "Raw JSON")]
    mode = forms.ChoiceField(choices=MODES, initial="form", widget=forms.RadioSelect(attrs={"data-role": "mode"}))
    input_json = forms.CharField(required=False, strip=False, label="Input (JSON)",
                                 widget=_mono(10, **{"data-role": "input-json", "aria-describedby": "json-status"}))
    submission = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    def __init__(self, *args: Any, variables: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.variables = variables
        self.fields["submission"].initial = uuid.uuid4().hex
        for variable in variables:
            self.fields[_var_field_name(variable["name"])] = self._variable_field(variable)

    @staticmethod
    def _variable_field(variable: dict[str, Any]) -> forms.Field:
        var_type = variable.get("type") or VariableType.STRING
        hint = variable.get("sample") if variable.get("sample") is not None else variable.get("default")
        placeholder = typed_value_text(hint, var_type) if hint is not None else ""
        attrs = {"placeholder": placeholder, "data-var": variable["name"], "data-type": var_type,
                 "data-sample": json.dumps(variable.get("sample")), "autocomplete": "off"}
        label = variable["name"]
        help_parts = [variable.get("description") or "", var_type.lower()]
        help_parts.append("required" if variable.get("required", True) and variable.get("default") is None
                          else "optional")
        kwargs = {"required": False, "label": label, "help_text": " · ".join(p for p in help_parts if p)}
        if var_type == VariableType.BOOLEAN:
            return forms.ChoiceField(choices=[("", "— not set —"), ("true", "true"), ("false", "false")],
                                     widget=forms.Select(attrs=attrs), **kwargs)
        if var_type == VariableType.JSON:
            return forms.CharField(strip=False, widget=_mono(3, **attrs), **kwargs)
        if var_type == VariableType.NUMBER:
            return forms.CharField(widget=forms.TextInput(attrs={"inputmode": "decimal", **attrs}), **kwargs)
        return forms.CharField(strip=False, widget=forms.TextInput(attrs=attrs), **kwargs)

    def variable_fields(self) -> list[forms.BoundField]:
        return [self[_var_field_name(v["name"])] for v in self.variables]

    def clean_submission(self) -> str | None:
        value = self.cleaned_data.get("submission") or ""
        return f"page-{value}" if value.isalnum() else None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        inputs: dict[str, Any] = {}
        if data.get("mode") == "json":
            try:
                inputs = parse_json_object(data.get("input_json") or "", label="The input")
            except forms.ValidationError as exc:
                self.add_error("input_json", exc)
        else:
            for variable in self.variables:
                field = _var_field_name(variable["name"])
                text = data.get(field)
                if text in (None, ""):
                    continue
                var_type = variable.get("type") or VariableType.STRING
                try:
                    value = parse_typed_value(text, var_type, label=variable["name"])
                except forms.ValidationError as exc:
                    self.add_error(field, "Enter a number, e.g. 42 or 3.5." if var_type == VariableType.NUMBER
                                   else exc)
                    continue
                inputs[variable["name"]] = value
        data["inputs"] = inputs
        return data

    def add_input_errors(self, errors: dict[str, Any]) -> None:
        """The service's per-variable input errors beside their fields (form mode) or
        under the JSON box (raw mode)."""
        json_mode = self.cleaned_data.get("mode") == "json" if hasattr(self, "cleaned_data") else False
        for name, message in (errors or {}).items():
            message = " ".join(message) if isinstance(message, list | tuple) else str(message)
            field = _var_field_name(str(name))
            if json_mode or field not in self.fields:
                self.add_error("input_json" if json_mode else None, f"{name}: {message}")
            else:
                self.add_error(field, message)


class PreviewForm(InputsForm):
    use_sample_data = forms.BooleanField(required=False, initial=True, label="Use sample data",
                                         help_text="Variables left blank take their sample (or default).")
    dry_run_models = forms.BooleanField(required=False, label="Dry run (no model calls)",
                                        help_text="Each model call is replaced by an estimate from the rendered prompt.")
    APPROVAL_ANSWERS = [("approve", "Approve"), ("reject", "Reject")]

    def __init__(self, *args: Any, approval_steps: list[str] | tuple[str, ...] = (), **kwargs: Any) -> None:
        """``approval_steps``: the names of the workflow's APPROVAL steps; each gets an
        approve/reject choice, the ``approvals`` option of ``workflow_preview``."""
        super().__init__(*args, **kwargs)
        self.approval_steps = list(approval_steps)
        for name in self.approval_steps:
            self.fields[_approval_field_name(name)] = forms.ChoiceField(
                choices=self.APPROVAL_ANSWERS, initial="approve", required=False, label=name,
                widget=forms.RadioSelect)

    def approval_fields(self) -> list[forms.BoundField]:
        return [self[_approval_field_name(name)] for name in self.approval_steps]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        # An answer left out is not sent: the service approves by default, with a warning.
        data["approvals"] = {name: data[_approval_field_name(name)] == "approve" for name in self.approval_steps
                             if data.get(_approval_field_name(name))}
        return data


def _approval_field_name(step_name: str) -> str:
    return f"approval__{step_name}"
