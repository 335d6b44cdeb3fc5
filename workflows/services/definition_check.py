"""The one save-time check of a workflow definition, shared by the API, admin and pages.

``definition_check`` answers every error (the definition is refused) and every warning
(it is saved, and the builder is told) of a definition whose linked prompts are already
resolved into each step (``steps[i].prompt`` a dict, as in a version snapshot).
``workflows.services.workflows.workflow_definition_check`` does the same for a
definition as a user submits it (prompt ids), resolving the owner's prompts first: that
is the one pages call.

Errors are keyed by where to fix them (``steps[1].config.template``), as the API has
always answered; warnings are ``{"path", "step", "field", "message"}`` objects.
"""
from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from providers.connections import connection_names
from providers.credentials import ANTHROPIC, GEMINI, OPENAI, provider_settings
from providers.errors import ProviderError
from providers.flags import live_features
from providers.registry import known_providers

from ..engine.references import Problem, definition_reference_problems
from ..engine.runner import validate_definition
from .http_steps import ADMIN_PATH as CREDENTIALS_ADMIN_PATH
from .http_steps import http_credential_names

_KEYED_PROVIDERS = {spec.name: spec for spec in (OPENAI, ANTHROPIC, GEMINI)}


@dataclass
class DefinitionCheck:
    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def add_error(self, path: str, message: str) -> None:
        messages = self.errors.setdefault(path, [])
        if message not in messages:
            messages.append(message)

    def add_warning(self, problem: Problem) -> None:
        entry = {"path": problem.path, "step": problem.step, "field": problem.field, "message": problem.message}
        if entry not in self.warnings:
            self.warnings.append(entry)


def _step_models(step: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field, model) of every model a PROMPT step calls."""
    if step.get("type") != "PROMPT":
        return []
    config = step.get("config") if isinstance(step.get("config"), dict) else {}
    models = config.get("models")
    if isinstance(models, list):
        return [(f"config.models[{i}].provider", m) for i, m in enumerate(models) if isinstance(m, dict)]
    if isinstance(config.get("model"), dict):
        return [("config.model.provider", config["model"])]
    prompt = step.get("prompt") if isinstance(step.get("prompt"), dict) else {}
    if isinstance(prompt.get("model_config"), dict) and prompt["model_config"]:
        return [("prompt.model_config.provider", prompt["model_config"])]
    return []


def _provider_problems(steps: list[dict[str, Any]], check: DefinitionCheck) -> None:
    builtin = set(known_providers())
    try:
        connections = set(connection_names())
    except ProviderError:  # the connections table cannot be read: judge built-ins only
        connections = set()
    configured = provider_settings()
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        name = step.get("name")
        for path_field, model in _step_models(step):
            provider = model.get("provider")
            if not isinstance(provider, str) or not provider.strip():
                continue  # validate_definition already says a provider name is needed
            label = f'Step "{name}"'
            if provider not in builtin and provider not in connections:
                known = ", ".join(sorted(builtin | connections))
                check.add_error(
                    f"steps[{index}].{path_field}",
                    f'{label}: "{provider}" is neither a built-in provider nor an active OpenAI-compatible '
                    f"connection (known: {known}). Fix the spelling, or have staff add or activate the "
                    "connection in admin (Providers → OpenAI-compatible connections).",
                )
                continue
            spec = _KEYED_PROVIDERS.get(provider)
            if spec is not None and not str(configured.get(spec.key_variable) or "").strip():
                check.add_warning(Problem(
                    f"steps[{index}].{path_field}", name if isinstance(name, str) else None, path_field,
                    f"{label}: {spec.label} has no API key here ({spec.key_variable} is not set), so runs of "
                    f"this step fail with MissingCredentials until it is. See {spec.docs}.",
                ))


def _credential_problems(steps: list[dict[str, Any]], check: DefinitionCheck) -> None:
    """HTTP steps name credentials that exist (the values are never looked at here)."""
    named = [(index, step) for index, step in enumerate(steps) if isinstance(step, dict) and step.get("type") == "HTTP"
             and isinstance(step.get("config"), dict) and isinstance(step["config"].get("credential"), str)]
    if not named:
        return
    known = set(http_credential_names())
    for index, step in named:
        name = step["config"]["credential"]
        if name not in known:
            listed = ", ".join(sorted(known)) or "none yet"
            check.add_error(
                f"steps[{index}].config.credential",
                f'Step "{step.get("name")}": no HTTP credential is named "{name}" (known: {listed}). Fix the '
                f"spelling, or have staff add it in {CREDENTIALS_ADMIN_PATH}.",
            )


def definition_check(
    *, steps: list[dict[str, Any]], variables: list[dict[str, Any]], features: Container[str] | None = None
) -> DefinitionCheck:
    """Every error and warning of a definition (linked prompts resolved into the steps)."""
    check = DefinitionCheck()
    structural = validate_definition(steps, variables, features=live_features() if features is None else features)
    for path, messages in (structural or {}).items():
        for message in messages if isinstance(messages, (list, tuple)) else [messages]:
            check.add_error(path, str(message))
    if not isinstance(steps, list) or not isinstance(variables, list):
        return check
    errors, warnings = definition_reference_problems(steps, variables)
    for problem in errors:
        check.add_error(problem.path, problem.message)
    for problem in warnings:
        check.add_warning(problem)
    _provider_problems(steps, check)
    _credential_problems(steps, check)
    return check
