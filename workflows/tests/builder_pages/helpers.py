"""Helpers for the builder's page tests: build the editor's POST bodies."""
from __future__ import annotations

from typing import Any

STEP_DEFAULTS = {
    "type": "PROMPT", "prompt": "", "template": "", "system": "", "provider": "", "model": "", "model_params": "",
    "output_format": "text", "expression": "", "if_true": "continue", "if_false": "stop", "on_error": "fail",
    "on_error_target": "", "default_output": "", "max_retries": "0", "backoff_base_seconds": "",
    "backoff_max_seconds": "", "jitter": "on", "timeout_seconds": "", "extra_config": "",
}
VARIABLE_DEFAULTS = {"type": "STRING", "required": "on", "default": "", "sample": "", "description": ""}


def text(response) -> str:
    return response.content.decode()


def editor_post(*, name: str = "Greeter", variables: list[dict[str, Any]] = (), steps: list[dict[str, Any]] = (),
                initial_variables: int = 0, initial_steps: int = 0, **fields: Any) -> dict[str, Any]:
    """The form body the editor posts: workflow fields, then the two formsets. Each
    variable/step dict overrides the defaults; ``ORDER`` defaults to its position and
    ``DELETE`` (truthy) marks it removed."""
    body: dict[str, Any] = {"name": name, "description": "", "is_active": "on", "timeout_seconds": "",
                            "max_concurrent_executions": "", "note": "", **fields}
    for prefix, rows, defaults, initial in (("variables", variables, VARIABLE_DEFAULTS, initial_variables),
                                            ("steps", steps, STEP_DEFAULTS, initial_steps)):
        body[f"{prefix}-TOTAL_FORMS"] = str(len(rows))
        body[f"{prefix}-INITIAL_FORMS"] = str(initial)
        body[f"{prefix}-MIN_NUM_FORMS"] = "0"
        body[f"{prefix}-MAX_NUM_FORMS"] = "1000"
        for index, row in enumerate(rows):
            values = {**defaults, "ORDER": str(index + 1), **row}
            retry_on = values.pop("retry_on", ["transient"])
            for key, value in values.items():
                if key == "DELETE" and not value:
                    continue
                if value is False:
                    continue
                body[f"{prefix}-{index}-{key}"] = "on" if value is True else value
            if prefix == "steps":
                body[f"{prefix}-{index}-retry_on"] = retry_on
    return body


class _FormParser:
    """The values a browser would submit for the first <form method=post> of a page."""

    def __init__(self, html: str, form_id: str | None) -> None:
        from html.parser import HTMLParser

        self.fields: list[tuple[str, str]] = []
        outer = self

        class Parser(HTMLParser):
            in_form = False
            textarea: str | None = None
            select: str | None = None
            select_value: str | None = None
            first_option: str | None = None
            buffer = ""
            in_template = 0

            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if tag == "template":
                    self.in_template += 1
                if tag == "form" and (form_id is None or a.get("id") == form_id) and a.get("method") == "post":
                    self.in_form = True
                if not self.in_form or self.in_template:
                    return
                if tag == "input" and a.get("name"):
                    kind = a.get("type", "text")
                    if kind in ("checkbox", "radio"):
                        if "checked" in a:
                            outer.fields.append((a["name"], a.get("value", "on")))
                    elif kind not in ("submit", "button"):
                        outer.fields.append((a["name"], a.get("value", "")))
                elif tag == "textarea" and a.get("name"):
                    self.textarea, self.buffer = a["name"], ""
                elif tag == "select" and a.get("name"):
                    self.select, self.select_value, self.first_option = a["name"], None, None
                elif tag == "option" and self.select is not None:
                    if self.first_option is None:
                        self.first_option = a.get("value", "")
                    if "selected" in a:
                        self.select_value = a.get("value", "")

            def handle_endtag(self, tag):
                if tag == "template":
                    self.in_template -= 1
                if tag == "form" and self.in_form:
                    self.in_form = False
                if not self.in_form and tag != "form":
                    return
                if tag == "textarea" and self.textarea is not None:
                    value = self.buffer[1:] if self.buffer.startswith("\n") else self.buffer
                    outer.fields.append((self.textarea, value))
                    self.textarea = None
                elif tag == "select" and self.select is not None:
                    outer.fields.append((self.select, self.select_value if self.select_value is not None
                                         else (self.first_option or "")))
                    self.select = None

            def handle_data(self, data):
                if self.textarea is not None:
                    self.buffer += data

        parser = Parser(convert_charrefs=True)
        parser.feed(html)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for name, value in self.fields:
            if name in body:
                body[name] = [*body[name], value] if isinstance(body[name], list) else [body[name], value]
            else:
                body[name] = value
        return body


def form_body(response, form_id: str | None = None) -> dict[str, Any]:
    """What submitting the page's form unchanged would post (list values for repeated names)."""
    return _FormParser(text(response), form_id).as_dict()
