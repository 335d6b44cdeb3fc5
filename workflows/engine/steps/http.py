"""HTTP: call an outside API between model calls (DESIGN §8).

Config: ``method`` (default GET), ``url``, ``headers`` (name → template) and ``body``
(template) rendered in the sandbox; ``credential``, the name of a staff-defined HTTP
credential whose headers are added (never rendered, recorded or logged);
``timeout_seconds`` (default 30); ``output_format`` ``text`` | ``json`` for the body.
Output: ``{"status", "headers", "body"}``. The network rules (SSRF guard, redirects,
size limit) live in ``engine/http_client.py``; the services pass the policy in
``limits["http"]``. ``limits["dry_run"]`` renders everything and sends nothing.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any

import httpx

from ..errors import ConfigError, EngineError
from ..http_client import HttpCredential, HttpPolicy, http_call
from ..templating import render, template_limits
from ..types import ProviderResolver, RunContext, StepDefinition, StepResult
from .base import (
    BaseStepHandler,
    ConfigErrors,
    add_error,
    check_output_format,
    check_template,
    completed,
    config_of,
    failed,
    parse_output,
)
from .registry import register

logger = logging.getLogger(__name__)

HTTP_POLICY = "http"  # limits key: an HttpPolicy
DRY_RUN = "dry_run"  # limits key: True in dry-run previews
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
BODYLESS = ("GET", "HEAD")
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 300.0
# The transport sets these itself; letting a template set them would desynchronise the request.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
MIN_REDACTED_CHARS = 4
DRY_RUN_OUTPUT = {"status": None, "headers": {}, "body": None, "dry_run": True}


def _is_template(source: str) -> bool:
    return "{{" in source or "{%" in source


@register("HTTP")
class HttpStep(BaseStepHandler):
    config_keys = frozenset({"method", "url", "headers", "body", "credential", "timeout_seconds", "output_format"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        config = step.config
        policy: HttpPolicy = limits.get(HTTP_POLICY) or HttpPolicy()
        step_input: dict[str, Any] = {"method": None, "url": None, "headers": {}, "body": None,
                                      "credential": config.get("credential")}
        credential: HttpCredential | None = None
        try:
            method = str(config.get("method") or "GET").upper()
            if method not in METHODS:
                raise ConfigError(f'config.method must be one of {", ".join(METHODS)}, not {method!r}.')
            variables, rendering = context.as_template_context(), template_limits(limits)
            url = render(str(config.get("url") or ""), variables, **rendering).strip()
            step_input.update(method=method, url=url)
            _check_url(url)
            headers = {str(name): render(str(value), variables, **rendering)
                       for name, value in (config.get("headers") or {}).items()}
            for name, value in headers.items():
                if "\r" in value or "\n" in value:
                    raise ConfigError(f'The header "{name}" rendered to a value with a line break; remove it.')
            step_input["headers"] = dict(headers)
            body_source = config.get("body")
            body = render(str(body_source), variables, **rendering) if body_source not in (None, "") else None
            step_input["body"] = body
            if config.get("credential"):
                credential = _credential(policy, str(config["credential"]))
                # Recorded by name only: the values never leave the request.
                step_input["headers"].update({name: f"<credential {credential.name}>" for name in credential.headers})
            if limits.get(DRY_RUN):
                return completed(dict(DRY_RUN_OUTPUT), input=step_input,
                                 warnings=["Dry run: no HTTP request was sent; the output is a placeholder."])
            if policy.before_call is not None:
                policy.before_call()  # e.g. the database connection goes back while we wait
            started = time.monotonic()
            answer = http_call(method=method, url=url, headers=headers, body=body, policy=policy,
                               credential=credential, timeout_seconds=_timeout(step))
            output = {"status": answer.status, "headers": answer.headers,
                      "body": parse_output(answer.text(), config.get("output_format", "text"))}
        except EngineError as exc:
            result = failed(step, exc, input=step_input)
            result.error = _redacted(result.error, credential)
            return result
        logger.info("http.finished", extra={"step": step.name, "status": answer.status, "redirects": len(answer.redirects),
                                            "latency_ms": int((time.monotonic() - started) * 1000)})
        warnings = [f"Followed {len(answer.redirects)} redirect(s) to {answer.url}."] if answer.redirects else []
        return completed(_redacted(output, credential), input=step_input, warnings=warnings)

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        method = config.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            add_error(errors, "config.method", f'must be one of {", ".join(METHODS)}, not {method!r}.')
        url = config.get("url")
        check_template(errors, "config.url", url, required=True)
        if isinstance(url, str) and url and not _is_template(url):
            try:
                _check_url(url)
            except ConfigError as exc:
                add_error(errors, "config.url", exc.message)
        self._header_errors(config.get("headers"), errors)
        check_template(errors, "config.body", config.get("body"), required=False)
        if config.get("body") not in (None, "") and isinstance(method, str) and method.upper() in BODYLESS:
            add_error(errors, "config.body", f"a {method.upper()} request carries no body; use POST, PUT or PATCH.")
        credential = config.get("credential")
        if credential is not None and (not isinstance(credential, str) or not credential.strip()):
            add_error(errors, "config.credential", "must be the name of an HTTP credential staff defined in admin.")
        timeout = config.get("timeout_seconds")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout <= MAX_TIMEOUT_SECONDS):
            add_error(errors, "config.timeout_seconds", f"must be a number of seconds above 0, at most {MAX_TIMEOUT_SECONDS:g}.")
        check_output_format(errors, config)
        return errors

    def _header_errors(self, headers: Any, errors: ConfigErrors) -> None:
        if headers is None:
            return
        if not isinstance(headers, dict):
            add_error(errors, "config.headers", 'must be an object of header name → template, e.g. {"Accept": "application/json"}.')
            return
        for name, value in headers.items():
            field = f"config.headers.{name}"
            if not isinstance(name, str) or not _TOKEN.match(name):
                add_error(errors, "config.headers", f"{name!r} is not a valid header name.")
            elif name.lower() in RESERVED_HEADERS:
                add_error(errors, field, "is set by PromptPilot itself; remove it.")
            elif isinstance(value, str):
                check_template(errors, field, value, required=False)
            else:
                add_error(errors, field, "must be a string (a Jinja2 template).")


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"The URL {url[:200]!r} is not valid ({exc}).") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"The URL {url[:200]!r} must be absolute and start with http:// or https://.")


def _timeout(step: StepDefinition) -> float:
    configured = step.config.get("timeout_seconds")
    seconds = float(configured) if isinstance(configured, (int, float)) and configured > 0 else DEFAULT_TIMEOUT_SECONDS
    if step.timeout_seconds:  # never past the attempt's own time limit
        seconds = min(seconds, float(step.timeout_seconds))
    return min(seconds, MAX_TIMEOUT_SECONDS)


def _credential(policy: HttpPolicy, name: str) -> HttpCredential:
    if policy.credentials is None:
        raise ConfigError(f'The HTTP credential "{name}" cannot be looked up here (no credential store).')
    return policy.credentials(name)


def _redacted(value: Any, credential: HttpCredential | None) -> Any:
    """``value`` with every credential header value replaced by its name (a server may echo them)."""
    if credential is None:
        return value
    # The whole value, and its token alone ("Bearer <token>"): a server may echo either.
    candidates = {part for value in credential.headers.values() for part in (value, value.split()[-1] if value.split() else "")}
    secrets = sorted((secret for secret in candidates if len(secret) >= MIN_REDACTED_CHARS), key=len, reverse=True)
    if not secrets:
        return value
    marker = f"<credential {credential.name}>"

    def scrub(item: Any) -> Any:
        if isinstance(item, str):
            for secret in secrets:
                item = item.replace(secret, marker)
            return item
        if isinstance(item, dict):
            return {key: scrub(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [scrub(inner) for inner in item]
        return item

    return scrub(value)
