"""The internal event bus behind EVENT triggers (DESIGN §5).

Two sources of events, one way to deliver them:

- the platform emits ``execution.completed`` / ``execution.failed`` when a run ends
  (``triggers/receivers.py`` hands the finished run to the ``triggers.dispatch_event``
  task, which calls ``event_dispatch_for_execution``), and ``execution.waiting`` when a
  step parks its run WAITING (an approval, a delay: ``event_dispatch_for_wait``);
- an owner emits custom events with ``POST /api/events/`` (``event_emit``).

``event_dispatch`` finds the active EVENT triggers of the SAME owner whose ``config.event``
is the event's name and whose ``filter`` holds on the payload, and fires each through
``trigger_fire`` with ``trigger.payload = {"event": name, **payload}``. Delivery is
idempotent per trigger (``delivery_id = "event:{name}:{event_id}"``), so a redelivered
task starts nothing twice, and chains of event-started runs stop at
``PROMPTPILOT_EVENT_MAX_DEPTH`` (``metadata.event_depth``).
"""
from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from promptpilot.common.db import run_prepared
from promptpilot.common.errors import ValidationFailed
from workflows.engine.errors import TemplateError
from workflows.models import ExecutionStatus, Workflow, WorkflowExecution

from ..errors import TriggerConfigInvalid, TriggerInputInvalid, TriggerRejected
from ..models import InvocationStatus, TriggerInvocation, TriggerKind, WorkflowTrigger
from .firing import invocation_record, trigger_fire, trigger_variable_names
from .webhooks import webhook_inputs

logger = logging.getLogger(__name__)

EXECUTION_COMPLETED = "execution.completed"
EXECUTION_FAILED = "execution.failed"
PLATFORM_EVENTS = {ExecutionStatus.COMPLETED: EXECUTION_COMPLETED, ExecutionStatus.FAILED: EXECUTION_FAILED}
EXECUTION_WAITING = "execution.waiting"
RESERVED_PREFIX = "execution."
# Keys of a platform event's payload (DESIGN §5), in this order.
EXECUTION_PAYLOAD_KEYS = ("workflow", "execution", "status", "output", "error")
# execution.waiting also names the step that waits; its output is the step's (an
# approval's message, form and expires_at; never the signed link, which is the owner's).
WAITING_PAYLOAD_KEYS = (*EXECUTION_PAYLOAD_KEYS, "step", "step_type")
EVENT_KEY = "event"  # trigger.payload.event holds the event's name

EVENT_NAME_MAX_LENGTH = 100
EVENT_NAME = re.compile(rf"[a-z0-9_.-]{{1,{EVENT_NAME_MAX_LENGTH}}}")
FILTER_MAX_KEYS = 20
FILTER_KEY_MAX_LENGTH = 200
EVENT_CHAIN_MAX = 20  # metadata.event_chain keeps the ids of the last runs of a chain only
DEFAULT_MAX_DEPTH = 5
DELIVERY_ID_MAX_LENGTH = 255  # TriggerInvocation.delivery_id
# Undelivered platform events older than this are not sent any more (like missed schedule slots).
EVENT_REDELIVERY_WINDOW = timedelta(hours=24)
SWEEP_BATCH = 100


class EventInvalid(ValidationFailed):
    code = "invalid_event"


def _event_error(message: str, field_name: str) -> EventInvalid:
    return EventInvalid(message, {"errors": {field_name: [message]}})


def max_depth() -> int:
    return int(settings.PROMPTPILOT.get("EVENT_MAX_DEPTH", DEFAULT_MAX_DEPTH))


# --- names, filters, config ------------------------------------------------------------


def event_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name an event, or None."""
    if not isinstance(name, str) or not name:
        return "The event name must be a non-empty string such as \"order.created\"."
    if not EVENT_NAME.fullmatch(name):
        return (f'"{name[:EVENT_NAME_MAX_LENGTH]}" is not an event name: use lowercase letters, digits, "_", "." '
                f'and "-" (at most {EVENT_NAME_MAX_LENGTH} characters), e.g. "order.created".')
    return None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def payload_lookup(payload: Any, path: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted ``path`` ("output.category", "items.0.sku") in ``payload``."""
    value = payload
    for segment in path.split("."):
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return False, None
    return True, value


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON scalars: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def filter_matches(event_filter: dict[str, Any] | None, payload: dict[str, Any]) -> bool:
    """Whether every ``{path: value}`` of ``event_filter`` holds on ``payload`` (a missing path never matches)."""
    for path, expected in (event_filter or {}).items():
        found, value = payload_lookup(payload, path)
        if not found or not json_equal(value, expected):
            return False
    return True


def event_config_validate(*, config: dict[str, Any], workflow: Workflow) -> dict[str, Any]:
    """Check the ``event`` and ``filter`` of an EVENT trigger's config (``input_mapping`` is
    checked with the webhook's rules by the caller). Returns the config with ``filter``
    defaulted to ``{}``. Raises TriggerConfigInvalid."""

    def error(message: str, field_name: str) -> TriggerConfigInvalid:
        return TriggerConfigInvalid(message, {"errors": {field_name: [message]}})

    name = config.get("event")
    problem = event_name_problem(name)
    if problem:
        raise error(f"{problem} EVENT triggers need config.event, e.g. \"{EXECUTION_FAILED}\".", "config.event")
    platform = name.startswith(RESERVED_PREFIX)
    if platform and name not in (*PLATFORM_EVENTS.values(), EXECUTION_WAITING):
        raise error(f'"{name}" is not a platform event; names starting with "{RESERVED_PREFIX}" are reserved and '
                    f"the platform emits {EXECUTION_COMPLETED}, {EXECUTION_FAILED} and {EXECUTION_WAITING}.",
                    "config.event")
    payload_keys = WAITING_PAYLOAD_KEYS if name == EXECUTION_WAITING else EXECUTION_PAYLOAD_KEYS
    event_filter = config.get("filter")
    event_filter = {} if event_filter is None else event_filter
    if not isinstance(event_filter, dict):
        raise error('config.filter must be an object of payload keys to required values, e.g. {"workflow": 12}.',
                    "config.filter")
    if len(event_filter) > FILTER_MAX_KEYS:
        raise error(f"config.filter has {len(event_filter)} keys; at most {FILTER_MAX_KEYS} are allowed.",
                    "config.filter")
    for path, expected in event_filter.items():
        where = f"config.filter.{path}"
        if not path or len(path) > FILTER_KEY_MAX_LENGTH or any(not part for part in path.split(".")):
            raise error(f'"{path[:FILTER_KEY_MAX_LENGTH]}" is not a payload key: use a name or a dotted path such as '
                        f'"output.category" (at most {FILTER_KEY_MAX_LENGTH} characters).', "config.filter")
        if not _is_scalar(expected):
            raise error(f'config.filter["{path}"] must be a string, number, boolean or null (filters compare single '
                        "values for equality); filter on a dotted path to reach inside objects.", where)
        if path == EVENT_KEY:
            raise error('config.filter cannot test "event": config.event already names the event.', where)
        if platform and path.split(".")[0] not in payload_keys:
            raise error(f'{name} payloads carry only {", ".join(payload_keys)}; "{path}" would never '
                        "match.", where)
    if platform and "workflow" in event_filter:
        wanted = event_filter["workflow"]
        mine = isinstance(wanted, int) and not isinstance(wanted, bool) and \
            Workflow.objects.filter(owner_id=workflow.owner_id, pk=wanted).exists()
        if not mine:
            raise error(f"config.filter.workflow must be the integer id of one of your workflows (got {wanted!r}).",
                        "config.filter.workflow")
    return {**config, "filter": event_filter}


# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One event on the bus. ``depth``/``chain`` describe the run that emitted it (0 / empty
    for a run not started by an event, and for custom events)."""

    name: str
    payload: dict[str, Any]
    owner_id: int
    event_id: str
    depth: int = 0
    chain: tuple[str, ...] = ()
    actor: Any = None
    # Platform events: when the run ended. Only triggers that existed then receive it.
    occurred_at: datetime | None = None

    @property
    def delivery_id(self) -> str:
        """The idempotency key of this event's firing of any one trigger."""
        key = f"event:{self.name}:{self.event_id}"
        if len(key) > DELIVERY_ID_MAX_LENGTH:  # long Idempotency-Keys: a digest keeps it unique and short
            key = f"event:{self.name}:sha256:{hashlib.sha256(self.event_id.encode()).hexdigest()}"
        return key

    @property
    def trigger_payload(self) -> dict[str, Any]:
        """``trigger.payload`` of the runs it starts: the payload, plus the event's name as ``event``."""
        return {EVENT_KEY: self.name, **self.payload}


@dataclass
class EventMatch:
    """What became of one matching trigger: ``status`` is an InvocationStatus, or DUPLICATE."""

    trigger_id: uuid.UUID
    invocation_id: uuid.UUID | None
    execution_id: uuid.UUID | None
    status: str
    error: str = ""


def execution_event(execution: WorkflowExecution) -> Event | None:
    """The platform event of a finished run: ``execution.completed`` / ``execution.failed``
    (None for other statuses, e.g. CANCELLED)."""
    name = PLATFORM_EVENTS.get(execution.status)
    if name is None:
        return None
    metadata = execution.metadata or {}
    depth = metadata.get("event_depth")
    chain = metadata.get("event_chain")
    ancestors = [str(c) for c in chain if isinstance(c, str)] if isinstance(chain, list) else []
    return Event(
        name=name,
        payload={
            "workflow": execution.workflow_id,
            "execution": str(execution.pk),
            "status": execution.status,
            "output": execution.output,
            "error": execution.error,
        },
        owner_id=execution.workflow.owner_id,
        event_id=str(execution.pk),
        depth=depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else 0,
        chain=(*ancestors, str(execution.pk)),
        occurred_at=execution.completed_at,
    )


def waiting_event(step_execution) -> Event:
    """``execution.waiting`` for a step that parked its run (one event per waiting step)."""
    execution = step_execution.execution
    metadata = execution.metadata or {}
    depth = metadata.get("event_depth")
    output = step_execution.output if isinstance(step_execution.output, dict) else step_execution.output
    return Event(
        name=EXECUTION_WAITING,
        payload={"workflow": execution.workflow_id, "execution": str(execution.pk), "status": ExecutionStatus.WAITING,
                 "output": output, "error": None, "step": step_execution.step_name,
                 "step_type": step_execution.step_type},
        owner_id=execution.workflow.owner_id,
        event_id=str(step_execution.pk),
        depth=depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else 0,
        chain=(str(execution.pk),),
        occurred_at=step_execution.started_at,
    )


def wait_has_listeners(*, owner_id: int) -> bool:
    return event_listeners(owner_id=owner_id, name=EXECUTION_WAITING).exists()


def event_dispatch_for_wait(*, step_execution_id: uuid.UUID | str) -> list[EventMatch]:
    """Emit ``execution.waiting`` for a step that waits (the ``triggers.dispatch_waiting_event``
    task and the sweep), then mark the step ``event_dispatched_at``. Idempotent per trigger,
    like every event; a step no longer waiting emits nothing."""
    from workflows.models import StepExecutionStatus, WorkflowStepExecution

    step_execution = (WorkflowStepExecution.objects.select_related("execution__workflow")
                      .filter(pk=step_execution_id).first())
    if step_execution is None or step_execution.status != StepExecutionStatus.WAITING:
        return []
    matches = event_dispatch(event=waiting_event(step_execution))  # raises if a trigger could not be served: not marked
    WorkflowStepExecution.objects.filter(pk=step_execution.pk).update(event_dispatched_at=timezone.now())
    return matches


def event_listeners(*, owner_id: int, name: str, created_by: datetime | None = None):
    """The owner's active EVENT triggers listening for ``name`` (filters not applied yet);
    with ``created_by``, only those that existed at that moment (a platform event goes to
    the triggers that existed when its run ended, even when it is delivered late)."""
    listeners = (
        WorkflowTrigger.objects.select_related("workflow")
        .filter(type=TriggerKind.EVENT, is_active=True, workflow__owner_id=owner_id, config__event=name)
        .order_by("created_at", "id")
    )
    return listeners.filter(created_at__lte=created_by) if created_by is not None else listeners


def execution_has_listeners(execution: WorkflowExecution) -> bool:
    """Whether the run's platform event could start anything (one cheap query, no dispatch).

    Asked at the end of every run, so the statement is written out and prepared once per
    connection: building and compiling the same question with the ORM cost a busy worker
    an eighth of its CPU (bench/README.md, "Runtime")."""
    name = PLATFORM_EVENTS.get(execution.status)
    if name is None:
        return False
    db = transaction.get_connection()
    row = run_prepared(_listeners_sql(db.vendor), [str(TriggerKind.EVENT), name, execution.workflow_id],
                       fetch=True, read_only=True)
    return row is not None


@lru_cache(maxsize=4)
def _listeners_sql(vendor: str) -> str:
    """Is there an active EVENT trigger for this event among the run's owner's workflows?"""
    quote = connection.ops.quote_name
    trigger, workflow = WorkflowTrigger._meta, Workflow._meta
    column = {f: quote(trigger.get_field(f).column) for f in ("type", "is_active", "config", "workflow")}
    owner, pk = quote(workflow.get_field("owner").column), quote(workflow.pk.column)
    # The same key lookup as the ORM's ``config__event`` on each database.
    event = (f"t.{column['config']} ->> 'event'" if vendor == "postgresql"
             else f"json_extract(t.{column['config']}, '$.event')")
    return (
        f"SELECT 1 FROM {quote(trigger.db_table)} t JOIN {quote(workflow.db_table)} w ON w.{pk} = t.{column['workflow']} "
        f"WHERE t.{column['type']} = %s AND t.{column['is_active']} AND {event} = %s "
        f"AND w.{owner} = (SELECT o.{owner} FROM {quote(workflow.db_table)} o WHERE o.{pk} = %s) LIMIT 1"
    )


# --- dispatch --------------------------------------------------------------------------


def _match(trigger: WorkflowTrigger, invocation: TriggerInvocation, status: str | None = None) -> EventMatch:
    return EventMatch(trigger_id=trigger.pk, invocation_id=invocation.pk, execution_id=invocation.execution_id,
                      status=status or invocation.status, error=invocation.error)


def _earlier_refusal(trigger: WorkflowTrigger, delivery_id: str) -> TriggerInvocation | None:
    """A firing of this event that was refused before (a redelivery is refused the same way, unrecorded)."""
    return (
        TriggerInvocation.objects.filter(trigger=trigger, request_meta__delivery_id=delivery_id,
                                         status__in=[InvocationStatus.REJECTED, InvocationStatus.INVALID_INPUT])
        .order_by("received_at")
        .first()
    )


def _refuse(trigger: WorkflowTrigger, event: Event, status: str, error: str,
            request_meta: dict[str, Any]) -> EventMatch:
    invocation = invocation_record(trigger=trigger, status=status, verified=True, payload=event.trigger_payload,
                                   error=error, request_meta=request_meta)
    return _match(trigger, invocation)


def _deliver(trigger: WorkflowTrigger, event: Event) -> EventMatch:
    """Fire one matching trigger for ``event``, exactly once per (trigger, event)."""
    delivery_id = event.delivery_id
    earlier = _earlier_refusal(trigger, delivery_id)
    if earlier is not None:
        return _match(trigger, earlier)
    depth = event.depth + 1
    chain = list(event.chain[-EVENT_CHAIN_MAX:])
    request_meta = {"event": event.name, "event_id": event.event_id, "event_depth": depth,
                    "event_chain": chain, "delivery_id": delivery_id}
    limit = max_depth()
    if depth > limit:
        return _refuse(
            trigger, event, InvocationStatus.REJECTED,
            f"Event depth limit reached: this {event.name} event comes from a chain of {event.depth} event-started "
            f"runs, and PROMPTPILOT_EVENT_MAX_DEPTH is {limit}. A workflow that triggers itself (or a cycle of "
            "EVENT triggers) stops here; narrow the trigger's filter to break the loop.",
            request_meta,
        )
    payload = event.trigger_payload
    try:
        inputs = webhook_inputs(trigger=trigger, payload=payload,
                                variables=trigger_variable_names(workflow=trigger.workflow))
    except TemplateError as exc:
        return _refuse(trigger, event, InvocationStatus.INVALID_INPUT,
                       f"The trigger's input_mapping could not be applied to this event: {exc.message}", request_meta)
    try:
        invocation = trigger_fire(
            trigger=trigger, inputs=inputs, payload=payload, delivery_id=delivery_id, verified=True,
            actor=event.actor, request_meta=request_meta,
            metadata={"event": event.name, "event_id": event.event_id, "event_depth": depth, "event_chain": chain},
        )
    except (TriggerInputInvalid, TriggerRejected) as exc:
        return _match(trigger, exc.invocation)  # recorded by trigger_fire; the other matches go on
    if invocation.was_duplicate:
        return _match(trigger, invocation, status="DUPLICATE")
    return _match(trigger, invocation)


def event_dispatch(*, event: Event) -> list[EventMatch]:
    """Deliver ``event`` to every matching EVENT trigger of its owner, in creation order.

    One trigger's refusal (bad input, inactive workflow, depth limit) is recorded as its
    invocation and does not stop the others. An unexpected error on one trigger is
    re-raised after the others were served (redelivery is harmless: delivery is idempotent).
    """
    matches: list[EventMatch] = []
    failure: Exception | None = None
    for trigger in event_listeners(owner_id=event.owner_id, name=event.name, created_by=event.occurred_at):
        if not filter_matches((trigger.config or {}).get("filter"), event.payload):
            continue
        try:
            matches.append(_deliver(trigger, event))
        except Exception as exc:
            logger.exception("event.delivery_failed", extra={"trigger_id": str(trigger.pk), "event": event.name,
                                                             "event_id": event.event_id})
            failure = failure or exc
    if failure is not None:
        raise failure
    logger.info("event.dispatched", extra={"event": event.name, "event_id": event.event_id,
                                           "matched": len(matches)})
    return matches


def event_dispatch_for_execution(*, execution_id: uuid.UUID | str) -> list[EventMatch]:
    """Emit the platform event of a finished run (the ``triggers.dispatch_event`` task and
    the sweep), then mark the run ``event_dispatched_at``. Delivery is idempotent per
    trigger, so a second dispatch of the same run starts nothing twice."""
    execution = WorkflowExecution.objects.select_related("workflow").filter(pk=execution_id).first()
    if execution is None:
        logger.info("event.source_missing", extra={"execution_id": str(execution_id)})
        return []
    event = execution_event(execution)
    if event is None:
        return []
    matches = event_dispatch(event=event)  # raises if a trigger could not be served: not marked
    WorkflowExecution.objects.filter(pk=execution.pk).update(event_dispatched_at=timezone.now())
    return matches


def _listening(name: str, occurred_at: str, owner_id: str):
    """The owner's active triggers for ``name`` that existed when the event occurred (a subquery
    over the fields ``occurred_at`` and ``owner_id`` of the swept row)."""
    return WorkflowTrigger.objects.filter(
        type=TriggerKind.EVENT, is_active=True, config__event=name,
        workflow__owner_id=OuterRef(owner_id), created_at__lte=OuterRef(occurred_at),
    )


def event_redeliver_missed(*, now: datetime | None = None, batch: int = SWEEP_BATCH) -> int:
    """Dispatch the platform events never marked dispatched that occurred at least the enqueue
    grace ago, within ``EVENT_REDELIVERY_WINDOW``, with a trigger of their owner listening:
    runs that ended (``execution.completed``/``failed``) and steps still WAITING
    (``execution.waiting``). The process that committed the change died before queueing the
    event, or the broker was unreachable then. Returns how many events were dispatched."""
    from workflows.models import StepExecutionStatus, WorkflowStepExecution

    now = now or timezone.now()
    grace = timedelta(seconds=settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"])
    since, until = now - EVENT_REDELIVERY_WINDOW, now - grace
    sources = [
        (WorkflowExecution.objects.filter(status=status, event_dispatched_at__isnull=True,
                                          completed_at__lt=until, completed_at__gte=since)
         .filter(Exists(_listening(name, "completed_at", "workflow__owner_id"))).order_by("completed_at"),
         lambda pk: event_dispatch_for_execution(execution_id=pk))
        for status, name in PLATFORM_EVENTS.items()
    ]
    # A waiting step's event "occurs" when the step started (as waiting_event says).
    sources.append((
        WorkflowStepExecution.objects.filter(status=StepExecutionStatus.WAITING, event_dispatched_at__isnull=True,
                                             started_at__lt=until, started_at__gte=since)
        .filter(Exists(_listening(EXECUTION_WAITING, "started_at", "execution__workflow__owner_id")))
        .order_by("started_at"),
        lambda pk: event_dispatch_for_wait(step_execution_id=pk),
    ))
    dispatched = 0
    for missed, dispatch in sources:
        for source_id in list(missed.values_list("pk", flat=True)[:batch]):
            try:
                dispatch(source_id)
                dispatched += 1
            except Exception:  # one event's failure does not hold up the others; the next sweep retries it
                logger.exception("event.redelivery_failed", extra={"source_id": str(source_id)})
    if dispatched:
        logger.warning("event.redelivered", extra={"count": dispatched})
    return dispatched


def event_emit(*, owner, name: str, payload: dict[str, Any] | None,
               idempotency_key: str | None = None) -> tuple[Event, list[EventMatch]]:
    """An owner's custom event: validated, then delivered to the owner's matching triggers
    at once (the runs are PENDING, durable, when this returns). A repeated
    ``idempotency_key`` with the same name starts nothing new."""
    problem = event_name_problem(name)
    if problem:
        raise _event_error(problem, "name")
    if name.startswith(RESERVED_PREFIX):
        raise _event_error(f'Event names starting with "{RESERVED_PREFIX}" are reserved for the platform, which '
                           f"emits {EXECUTION_COMPLETED} and {EXECUTION_FAILED} itself; choose another name.", "name")
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise _event_error("The payload must be a JSON object.", "payload")
    if EVENT_KEY in payload:
        raise _event_error(f'The payload cannot have a top-level "{EVENT_KEY}" key: trigger.payload.{EVENT_KEY} '
                           "holds the event's name.", "payload")
    event = Event(name=name, payload=payload, owner_id=owner.pk, event_id=idempotency_key or uuid.uuid4().hex,
                  actor=owner)
    return event, event_dispatch(event=event)
