"""Trigger lifecycle: create, update, delete, rotate the secret, execute (MANUAL / API).

Secrets are generated here and returned once to the caller; only their encrypted
(webhook) or hashed (API key) form is stored.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from promptpilot.common.errors import ValidationFailed
from workflows.engine.templating import validate_expression
from workflows.models import Workflow

from ..errors import (
    SecretNotRotatable,
    TriggerConfigInvalid,
    TriggerInactive,
    TriggerNotExecutable,
    TriggerTypeNotAvailable,
)
from ..models import TriggerInvocation, TriggerKind, WorkflowTrigger
from .api_keys import api_key_generate, parse_rate
from .events import event_config_validate
from .firing import trigger_fire, trigger_variable_names
from .schedules import CONFIG_KEYS as SCHEDULE_CONFIG_KEYS
from .schedules import schedule_config_validate, schedule_sync
from .secrets import secret_encrypt
from .webhooks import webhook_secret_generate

logger = logging.getLogger(__name__)

AVAILABLE_TYPES = (TriggerKind.MANUAL, TriggerKind.SCHEDULED, TriggerKind.WEBHOOK, TriggerKind.API, TriggerKind.EVENT)
CONFIG_KEYS = {
    TriggerKind.MANUAL: set(),
    TriggerKind.WEBHOOK: {"input_mapping"},
    TriggerKind.API: {"rate_limit"},
    TriggerKind.SCHEDULED: SCHEDULE_CONFIG_KEYS,
    TriggerKind.EVENT: {"event", "filter", "input_mapping"},
}
EXECUTABLE_TYPES = (TriggerKind.MANUAL, TriggerKind.API)


def _config_error(message: str, field: str = "config") -> TriggerConfigInvalid:
    return TriggerConfigInvalid(message, {"errors": {field: [message]}})


def trigger_config_validate(*, type: str, config: Any, workflow: Workflow) -> dict[str, Any]:
    """The config of a ``type`` trigger on ``workflow``, checked. Raises TriggerConfigInvalid."""
    if type not in AVAILABLE_TYPES:
        raise TriggerTypeNotAvailable(
            f"{type} triggers are not available yet: scheduled and event triggers arrive with the rest of "
            f"issue 4. Use one of {', '.join(AVAILABLE_TYPES)}.",
            {"errors": {"type": [f"{type} is not available yet."]}},
        )
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise _config_error("config must be a JSON object.")
    unknown = sorted(set(config) - CONFIG_KEYS[type])
    if unknown:
        allowed = ", ".join(sorted(CONFIG_KEYS[type])) or "none"
        raise _config_error(f"{type} triggers do not take config key(s) {', '.join(unknown)} (allowed: {allowed}).")
    if type in (TriggerKind.WEBHOOK, TriggerKind.EVENT) and config.get("input_mapping") is not None:
        mapping = config["input_mapping"]
        if not isinstance(mapping, dict):
            raise _config_error('input_mapping must be an object {"variable": "expression over payload"}.',
                                "config.input_mapping")
        variables = set(trigger_variable_names(workflow=workflow))
        for name, expression in mapping.items():
            if name not in variables:
                raise _config_error(
                    f'input_mapping names "{name}", which is not a variable of the workflow '
                    f"(variables: {', '.join(sorted(variables)) or 'none'}).", f"config.input_mapping.{name}",
                )
            if not isinstance(expression, str):
                raise _config_error(f'input_mapping["{name}"] must be an expression string such as '
                                    '"payload.customer.name".', f"config.input_mapping.{name}")
            problem = validate_expression(expression)
            if problem:
                raise _config_error(f'input_mapping["{name}"]: {problem}', f"config.input_mapping.{name}")
    if type == TriggerKind.API and config.get("rate_limit") is not None:
        try:
            parse_rate(config["rate_limit"])
        except ValueError as exc:
            raise _config_error(str(exc), "config.rate_limit") from None
    if type == TriggerKind.EVENT:
        config = event_config_validate(config=config, workflow=workflow)
    if type == TriggerKind.SCHEDULED:
        config = schedule_config_validate(config=config, workflow=workflow)
    return config


def _new_secret(trigger: WorkflowTrigger) -> str | None:
    """Give ``trigger`` a fresh secret (unsaved) and return it in clear, or None for types without one."""
    if trigger.type == TriggerKind.WEBHOOK:
        secret = webhook_secret_generate()
        trigger.secret_encrypted = secret_encrypt(secret)
        return secret
    if trigger.type == TriggerKind.API:
        key, prefix, digest = api_key_generate()
        trigger.api_key_prefix, trigger.api_key_hash = prefix, digest
        return key
    return None


def trigger_create(*, owner, workflow: Any, type: str, name: str, is_active: bool = True,
                   config: dict[str, Any] | None = None) -> tuple[WorkflowTrigger, str | None]:
    """Create a trigger on one of ``owner``'s workflows. Returns ``(trigger, secret)``: the
    webhook secret or API key in clear, to be shown once (None for MANUAL)."""
    workflow_obj = Workflow.objects.filter(owner=owner, pk=workflow).first() if workflow else None
    if workflow_obj is None:
        raise ValidationFailed(
            f"No workflow with id {workflow} among yours; a trigger must start one of your workflows.",
            {"errors": {"workflow": ["Not one of your workflows."]}},
        )
    config = trigger_config_validate(type=type, config=config, workflow=workflow_obj)
    trigger = WorkflowTrigger(workflow=workflow_obj, type=type, name=name, is_active=is_active, config=config)
    secret = _new_secret(trigger)
    with transaction.atomic():
        trigger.save()
        if trigger.type == TriggerKind.SCHEDULED:
            schedule_sync(trigger=trigger)  # next_run_at and the beat mirror
    logger.info("trigger.created", extra={"trigger_id": str(trigger.pk), "type": type})
    return trigger, secret


def trigger_update(*, trigger: WorkflowTrigger, data: dict[str, Any]) -> WorkflowTrigger:
    """Change name, is_active and config. ``type`` and ``workflow`` are fixed at creation."""
    if "type" in data and data["type"] != trigger.type:
        raise ValidationFailed(
            f"A trigger's type cannot change (this one is {trigger.type}); create a new trigger instead.",
            {"errors": {"type": ["Immutable after creation."]}},
        )
    if "workflow" in data and data["workflow"] != trigger.workflow_id:
        raise ValidationFailed(
            "A trigger's workflow cannot change; create a trigger on the other workflow instead.",
            {"errors": {"workflow": ["Immutable after creation."]}},
        )
    previous = {"config": dict(trigger.config or {}), "is_active": trigger.is_active}
    fields = ["updated_at"]
    if "config" in data:
        trigger.config = trigger_config_validate(type=trigger.type, config=data["config"], workflow=trigger.workflow)
        fields.append("config")
    for name in ("name", "is_active"):
        if name in data:
            setattr(trigger, name, data[name])
            fields.append(name)
    with transaction.atomic():
        trigger.save(update_fields=fields)
        if trigger.type == TriggerKind.SCHEDULED:
            schedule_sync(trigger=trigger, previous=previous)  # enable/disable, new cron or time zone
    return trigger


def trigger_delete(*, trigger: WorkflowTrigger) -> None:
    """Delete the trigger and its invocations; its executions stay (their trigger becomes null)."""
    trigger.delete()


def trigger_rotate_secret(*, trigger: WorkflowTrigger, grace_seconds: int = 0) -> tuple[WorkflowTrigger, str]:
    """A new webhook secret or API key. The old one stops working at once, except that a
    webhook may keep accepting its previous secret for ``grace_seconds`` (to switch a
    sender over without losing deliveries). API keys are always revoked at once."""
    if trigger.type not in (TriggerKind.WEBHOOK, TriggerKind.API):
        raise SecretNotRotatable(
            f"{trigger.type} triggers have no secret; only WEBHOOK and API triggers can rotate one.",
            {"type": trigger.type},
        )
    if grace_seconds and trigger.type != TriggerKind.WEBHOOK:
        raise SecretNotRotatable(
            "API keys are revoked at once on rotation; send no grace_seconds (or 0) for an API trigger.",
            {"errors": {"grace_seconds": ["Only WEBHOOK triggers take a grace period."]}},
        )
    with transaction.atomic():
        locked = WorkflowTrigger.objects.select_for_update().select_related("workflow").get(pk=trigger.pk)
        previous = locked.secret_encrypted
        secret = _new_secret(locked)
        if locked.type == TriggerKind.WEBHOOK:
            keep = bool(grace_seconds and previous)
            locked.previous_secret_encrypted = previous if keep else ""
            locked.previous_secret_expires_at = timezone.now() + timedelta(seconds=grace_seconds) if keep else None
        locked.save(update_fields=["secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at",
                                   "api_key_prefix", "api_key_hash", "updated_at"])
    logger.info("trigger.secret_rotated", extra={"trigger_id": str(trigger.pk)})
    return locked, secret


def trigger_execute(*, trigger: WorkflowTrigger, body: dict[str, Any], actor=None,
                    idempotency_key: str | None = None, verified_by: str = "owner") -> TriggerInvocation:
    """Fire a MANUAL or API trigger with ``body = {"input": {...}, ...}``: the inputs are
    ``body["input"]``, ``trigger.payload`` is the whole body. ``actor`` is the owner for
    session/token calls, None for API-key calls."""
    if trigger.type not in EXECUTABLE_TYPES:
        hint = (f"send a signed POST to /api/webhooks/{trigger.pk}" if trigger.type == TriggerKind.WEBHOOK
                else "it fires on its own")
        raise TriggerNotExecutable(
            f"{trigger.type} triggers cannot be executed with this endpoint; {hint}.", {"type": trigger.type}
        )
    if not trigger.is_active:
        raise TriggerInactive(
            f'Trigger "{trigger.name}" is disabled; set is_active to true before executing it.',
            {"trigger": str(trigger.pk)},
        )
    return trigger_fire(
        trigger=trigger, inputs=body.get("input") or {}, payload=body, delivery_id=idempotency_key,
        verified=True, actor=actor, request_meta={"auth": verified_by},
    )
