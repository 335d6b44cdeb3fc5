"""Standard Webhooks (https://www.standardwebhooks.com/) for WEBHOOK triggers.

A delivery carries ``webhook-id``, ``webhook-timestamp`` (integer Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` entries separated by spaces) over
``"{webhook-id}.{webhook-timestamp}.{raw body}"``, keyed with the base64-decoded part of
the ``whsec_`` secret. ``webhook_verify`` is a pure function (no database); the
receiving service records every delivery of an existing trigger, verified or not.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from promptpilot.common.db import concrete_fields, instance_from_row, run_prepared
from promptpilot.common.ids import parse_uuid
from promptpilot.common.json_text import lone_surrogate, lone_surrogate_message, without_lone_surrogates
from workflows.engine.errors import TemplateError
from workflows.engine.templating import evaluate_expression
from workflows.models import Workflow
from workflows.services.definitions import workflow_version_variables

from ..errors import (
    SecretUnreadable,
    TriggerInputInvalid,
    WebhookBodyInvalid,
    WebhookBodyTooLarge,
    WebhookInputInvalid,
    WebhookSignatureInvalid,
)
from ..models import InvocationStatus, TriggerInvocation, TriggerKind, WorkflowTrigger
from . import webhook_fast_path
from .firing import (
    first_accepted_invocation,
    invocation_record,
    record_duplicate,
    trigger_fire,
    trigger_variable_names,
)
from .secrets import secret_decrypt

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
MAX_WEBHOOK_ID_LENGTH = 255
MAX_SIGNATURES = 16  # more than any rotation needs; bounds the work an attacker can ask for
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookVerificationError(Exception):
    """Why a delivery does not verify; the message is stored as the invocation's verification_error."""


def webhook_secret_generate() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


@lru_cache(maxsize=256)
def _secret_key(secret: str) -> bytes:
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("The webhook secret is not whsec_ followed by base64.") from exc
    if not key:
        raise ValueError("The webhook secret is empty.")
    return key


def webhook_signature(*, secret: str, msg_id: str, timestamp: str | int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a delivery (senders and tests use this)."""
    digest = _digest(secret, f"{msg_id}.{timestamp}.".encode() + body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _digest(secret: str, signed: bytes) -> bytes:
    return hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value.strip()
    return ""


def webhook_verify(
    *,
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Check a delivery against ``secret`` (or any of several, during a rotation grace
    period); returns its ``webhook-id``.

    Raises WebhookVerificationError naming the first problem. ``body`` must be the raw
    bytes as received: the HMAC covers them exactly, so re-serialised JSON fails.
    """
    msg_id = _header(headers, HEADER_ID)
    timestamp = _header(headers, HEADER_TIMESTAMP)
    signature_header = _header(headers, HEADER_SIGNATURE)
    missing = [name for name, value in ((HEADER_ID, msg_id), (HEADER_TIMESTAMP, timestamp),
                                        (HEADER_SIGNATURE, signature_header)) if not value]
    if missing:
        raise WebhookVerificationError(f"Missing header(s): {', '.join(missing)}.")
    if "." in msg_id:
        # The id is the first field of the signed string; a dot would make it ambiguous.
        raise WebhookVerificationError("The webhook-id header must not contain '.'.")
    if not msg_id.isprintable():
        raise WebhookVerificationError("The webhook-id header must hold printable characters only.")
    if len(msg_id) > MAX_WEBHOOK_ID_LENGTH:
        raise WebhookVerificationError(f"The webhook-id header is longer than {MAX_WEBHOOK_ID_LENGTH} characters.")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15:
        raise WebhookVerificationError("The webhook-timestamp header must be an integer number of seconds.")
    current = time.time() if now is None else now
    skew = int(timestamp) - current
    if skew < -tolerance_seconds:
        raise WebhookVerificationError(
            f"The webhook-timestamp is {math.ceil(-skew)} s old; at most {tolerance_seconds} s is accepted."
        )
    if skew > tolerance_seconds:
        raise WebhookVerificationError(
            f"The webhook-timestamp is {math.ceil(skew)} s in the future; at most {tolerance_seconds} s is accepted."
        )
    secrets_ = [secret] if isinstance(secret, str) else list(secret)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = [_digest(s, signed) for s in secrets_]
    for entry in signature_header.split()[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Every comparison runs, so timing does not tell which secret matched.
        if sum(hmac.compare_digest(candidate, digest) for digest in expected):
            return msg_id
    raise WebhookVerificationError("No signature in webhook-signature matches the body and the secret.")


def webhook_trigger_secrets(trigger: WorkflowTrigger, *, now=None) -> list[str]:
    """The secrets a delivery may be signed with: the current one, and the previous one
    while its rotation grace period lasts. Raises SecretUnreadable."""
    secrets_ = [secret_decrypt(trigger.secret_encrypted)]
    now = now or timezone.now()
    if trigger.previous_secret_encrypted and trigger.previous_secret_expires_at and \
            trigger.previous_secret_expires_at > now:
        secrets_.append(secret_decrypt(trigger.previous_secret_encrypted))
    return secrets_


# --- receiving ---------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _storable_problem(value: Any) -> str | None:
    """Why PostgreSQL's jsonb would refuse ``value`` (it stores no \\u0000), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "contains a \\u0000 character"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class LoneSurrogate(ValueError):
    """A body that parses but holds invalid text; ``payload`` is it with U+FFFD in place."""

    def __init__(self, message: str, payload: dict[str, Any]) -> None:
        super().__init__(message)
        self.payload = payload


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. Raises ValueError saying what is wrong."""
    try:
        value = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("The JSON body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"The body is not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"The body must be a JSON object, got {type(value).__name__}.")
    # JSON can only carry a NUL character or a surrogate escaped, so most bodies need no walk at all.
    problem = _storable_problem(value) if b"\\u0000" in body else None
    if problem:
        raise ValueError(f"The JSON body {problem}; it cannot be stored.")
    if _SURROGATE_ESCAPE.search(body) and (char := lone_surrogate(value)) is not None:
        raise LoneSurrogate(lone_surrogate_message(char), without_lone_surrogates(value))
    return value


def webhook_inputs(*, trigger: WorkflowTrigger, payload: dict[str, Any], variables: list[str]) -> dict[str, Any]:
    """Inputs from a payload: top-level keys that are variable names, then ``config.input_mapping``
    expressions (``{variable: "payload.customer.name"}``), which win. Raises TemplateError."""
    inputs = {name: payload[name] for name in variables if name in payload}
    mapping = (trigger.config or {}).get("input_mapping") or {}
    for name, expression in mapping.items():
        try:
            inputs[name] = evaluate_expression(expression, {"payload": payload})
        except TemplateError as exc:
            raise TemplateError(f'input_mapping["{name}"]: {exc.message}', details=exc.details) from None
    return inputs


@dataclass(frozen=True)
class WebhookRequest:
    """What the view hands over: no Django request object crosses into the service."""

    headers: Mapping[str, str]
    body: bytes
    remote_addr: str = ""
    content_type: str = ""
    content_length: str = ""  # as claimed by the header (the body may not have been read)


def _claimed_length(value: str) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 16 else None


def _clean(value: str, limit: int) -> str:
    """A claimed header value, safe to store (jsonb refuses \u0000) and bounded."""
    return value.replace("\x00", "")[:limit]


def _request_meta(request: WebhookRequest) -> dict[str, Any]:
    return {
        "webhook_id": _clean(_header(request.headers, HEADER_ID), MAX_WEBHOOK_ID_LENGTH),
        "webhook_timestamp": _clean(_header(request.headers, HEADER_TIMESTAMP), 40),
        "content_type": _clean(request.content_type, 200),
        "content_length": len(request.body) if request.body else _claimed_length(request.content_length),
        "body_sha256": hashlib.sha256(request.body).hexdigest() if request.body else None,
        "remote_addr": _clean(request.remote_addr, 64),
    }


def _record_rejection(*, trigger, request, verified, verification_error="", error="", payload=None):
    return invocation_record(
        trigger=trigger, status=InvocationStatus.REJECTED, verified=verified,
        verification_error=verification_error, error=error, payload=payload, request_meta=_request_meta(request),
    )


def webhook_record_too_large(*, trigger: WorkflowTrigger, request: WebhookRequest, limit: int) -> TriggerInvocation:
    """Record a delivery refused for its size (the body was not read) and raise 413."""
    invocation = _record_rejection(
        trigger=trigger, request=request, verified=False,
        verification_error="Not verified: the body was too large to read.",
        error=f"The body is larger than {limit} bytes.",
    )
    size = f"{limit // 1048576} MiB" if limit % 1048576 == 0 else f"{limit} bytes"
    raise WebhookBodyTooLarge(f"The request body is too large; send at most {size} of JSON.", invocation=invocation)


def webhook_receive(*, trigger: WorkflowTrigger, request: WebhookRequest) -> TriggerInvocation:
    """Verify, record and start one delivery to an active WEBHOOK trigger.

    Every outcome is recorded as a TriggerInvocation before this returns or raises:
    401 bad signature, 413 too large, 400 not a JSON object, 422 inputs refused,
    200 duplicate (the first delivery's execution), 202 accepted.
    """
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 1024 * 1024
    if len(request.body) > limit:  # bodies without Content-Length are only measured here
        webhook_record_too_large(trigger=trigger, request=request, limit=limit)
    tolerance = int(settings.PROMPTPILOT.get("WEBHOOK_TOLERANCE_SECONDS", DEFAULT_TOLERANCE_SECONDS))
    try:
        msg_id = webhook_verify(secret=webhook_trigger_secrets(trigger), headers=request.headers, body=request.body,
                                tolerance_seconds=tolerance)
    except (WebhookVerificationError, SecretUnreadable, ValueError) as exc:
        if isinstance(exc, SecretUnreadable):
            logger.error("webhook.secret_unreadable", extra={"trigger_id": str(trigger.pk)})
        invocation = _record_rejection(trigger=trigger, request=request, verified=False, verification_error=str(exc))
        raise WebhookSignatureInvalid(
            f"The webhook signature did not verify: {exc} Sign \"{{webhook-id}}.{{webhook-timestamp}}.{{body}}\" "
            "with the trigger's whsec_ secret (see docs/TRIGGERS.md).",
            {"reason": str(exc)}, invocation=invocation,
        ) from None

    # NOTE: a repeated webhook-id is found by trigger_fire (the unique index), not looked up
    # first; only a delivery about to be refused checks whether it repeats an accepted one,
    # which is answered as such whatever its body.
    try:
        payload = parse_json_object(request.body)
    except ValueError as exc:
        first = first_accepted_invocation(trigger, msg_id)
        if first is not None:
            return record_duplicate(trigger=trigger, first=first, verified=True, request_meta=_request_meta(request))
        invocation = _record_rejection(trigger=trigger, request=request, verified=True, error=str(exc),
                                       payload=getattr(exc, "payload", None))
        hint = "" if isinstance(exc, LoneSurrogate) else " Send a JSON object."
        raise WebhookBodyInvalid(f"{exc}{hint}", invocation=invocation) from None

    try:
        inputs = webhook_inputs(trigger=trigger, payload=payload, variables=_variable_names(trigger))
    except TemplateError as exc:
        first = first_accepted_invocation(trigger, msg_id)
        if first is not None:
            return record_duplicate(trigger=trigger, first=first, verified=True, request_meta=_request_meta(request))
        invocation = invocation_record(
            trigger=trigger, status=InvocationStatus.INVALID_INPUT, verified=True, payload=payload,
            error=exc.message, request_meta=_request_meta(request),
        )
        raise WebhookInputInvalid(
            f"The trigger's input_mapping could not be applied to this payload: {exc.message}",
            {"errors": {"input_mapping": exc.message}}, invocation=invocation,
        ) from None

    try:
        invocation = trigger_fire(trigger=trigger, inputs=inputs, payload=payload, delivery_id=msg_id,
                                  verified=True, request_meta=_request_meta(request),
                                  version_id=getattr(trigger, "latest_version_id", None))
    except TriggerInputInvalid as exc:
        raise WebhookInputInvalid(exc.message, exc.extra, invocation=exc.invocation) from None
    if not getattr(invocation, "was_duplicate", False):
        webhook_fast_path.remember(trigger)
    return invocation


def webhook_receive_remembered(*, entry: webhook_fast_path.Remembered,
                               request: WebhookRequest) -> TriggerInvocation | None:
    """A delivery to a trigger this process knows (``webhook_fast_path.remembered``), without
    reading the trigger again: the ACCEPTED invocation, or None when the delivery must go
    the full way (``webhook_receive``)."""
    if len(request.body) > (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 1024 * 1024):
        return None
    tolerance = int(settings.PROMPTPILOT.get("WEBHOOK_TOLERANCE_SECONDS", DEFAULT_TOLERANCE_SECONDS))
    try:
        msg_id = webhook_verify(secret=webhook_fast_path.secrets_of(entry, timezone.now()), headers=request.headers,
                                body=request.body, tolerance_seconds=tolerance)
        payload = parse_json_object(request.body)
    except (WebhookVerificationError, SecretUnreadable, ValueError):
        return None  # the full way records the rejection
    inputs = webhook_fast_path.inputs_of(entry, payload)
    if inputs is None:
        return None
    return webhook_fast_path.accept(entry, msg_id=msg_id, payload=payload, inputs=inputs,
                                    request_meta=_request_meta(request))


def _variable_names(trigger: WorkflowTrigger) -> list[str]:
    """The variables a payload may fill: those of the version the run will pin (read once
    per version and process), else of the workflow as it stands."""
    version_id = getattr(trigger, "latest_version_id", None)
    if version_id is None:
        return trigger_variable_names(workflow=trigger.workflow)
    return [variable["name"] for variable in workflow_version_variables(version_id=version_id)]


# What the receiver reads of a trigger and its workflow (nothing else is touched on the
# way to a 202; anything else would be loaded lazily, one query per field).
_DELIVERY_TRIGGER_FIELDS = ("id", "workflow", "type", "name", "is_active", "config", "secret_encrypted",
                            "previous_secret_encrypted", "previous_secret_expires_at", "last_triggered_at")
_DELIVERY_WORKFLOW_FIELDS = ("id", "name", "is_active")


@lru_cache(maxsize=1)
def _delivery_query() -> tuple[str, list, list]:
    quote = connection.ops.quote_name
    trigger_fields = concrete_fields(WorkflowTrigger, _DELIVERY_TRIGGER_FIELDS)
    workflow_fields = concrete_fields(Workflow, _DELIVERY_WORKFLOW_FIELDS)
    columns = [f"t.{quote(f.column)}" for f in trigger_fields] + [f"w.{quote(f.column)}" for f in workflow_fields]
    # The version a run pins is the workflow's latest_version pointer, as for every start
    # (definitions.workflow_current_version).
    sql = (
        f"SELECT {', '.join(columns)}, w.{quote(Workflow._meta.get_field('latest_version').column)} "
        f"FROM {quote(WorkflowTrigger._meta.db_table)} t "
        f"JOIN {quote(Workflow._meta.db_table)} w ON w.{quote(Workflow._meta.pk.column)} = "
        f"t.{quote(WorkflowTrigger._meta.get_field('workflow').column)} "
        f"WHERE t.{quote(WorkflowTrigger._meta.pk.column)} = %s "
        f"AND t.{quote(WorkflowTrigger._meta.get_field('type').column)} = %s "
        f"AND t.{quote(WorkflowTrigger._meta.get_field('is_active').column)}"
    )
    return sql, trigger_fields, workflow_fields


def webhook_trigger_for_delivery(trigger_id: Any) -> WorkflowTrigger | None:
    """The active WEBHOOK trigger a delivery is addressed to, or None (the caller answers 404).

    One query reads the trigger, its workflow and the id of the workflow's latest version
    (``trigger.latest_version_id``: the version the run will pin; None if there is none
    yet). It is hand-written because the ORM took 0.6-0.9 ms of CPU to compile it, three to
    four times what this takes, on the API's hottest path (bench/README.md, "Webhooks
    benchmark"). Fields outside ``_DELIVERY_*_FIELDS`` are deferred.
    """
    pk = parse_uuid(trigger_id)
    if pk is None:
        return None
    sql, trigger_fields, workflow_fields = _delivery_query()
    db = transaction.get_connection()
    row = run_prepared(sql, [WorkflowTrigger._meta.pk.get_db_prep_value(pk, db), str(TriggerKind.WEBHOOK)], fetch=True,
                       read_only=True)
    if row is None:
        return None
    split = len(trigger_fields)
    trigger = instance_from_row(db, WorkflowTrigger, trigger_fields, row[:split])
    trigger.workflow = instance_from_row(db, Workflow, workflow_fields, row[split:-1])
    trigger.latest_version_id = row[-1]
    return trigger
