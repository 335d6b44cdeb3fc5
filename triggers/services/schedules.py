"""SCHEDULED triggers: a cron expression in a time zone, fired once per scheduled time.

How it fires (docs/TRIGGERS.md, "SCHEDULED"):

- Each active schedule stores ``next_run_at`` (UTC). One beat entry,
  ``triggers-scheduler``, runs ``triggers.fire_due_schedules`` every second; a sweep
  locks the due rows (``SKIP LOCKED``, in batches), fires each due slot through
  ``trigger_fire`` with ``delivery_id = "schedule:<slot in UTC>"`` and advances
  ``next_run_at``, in one transaction per batch. Up to PROMPTPILOT_SCHEDULE_SWEEPERS
  sweeps run at once (PostgreSQL advisory locks), so a busy minute is fired by several
  worker processes, each taking batches the others have not locked.
- Times come from croniter only: the preview (``schedule_next_runs``) and the firing
  walk the same chain of ``Schedule.next_after``, so what is shown is what fires.
- Each trigger also has a django-celery-beat ``PeriodicTask`` named ``trigger:<id>``:
  the admin-visible record the issue asks for (crontab and time zone as configured,
  enabled while the trigger is active, last run and run count as the sweep fires it).
  PromptPilot's beat scheduler (``triggers.beat.DatabaseScheduler``) leaves these
  records out of its heap: the ``triggers-scheduler`` entry is their one coalesced
  wakeup, so a slot costs beat nothing and is fired once. Under django-celery-beat's
  stock scheduler the records run too: ``triggers.fire_schedule`` then fires only what
  croniter says is due, with the same delivery id; a slot fired by both paths, or by
  two beat processes, is one execution (row lock + unique key).

Cron semantics are croniter's (POSIX: when both day-of-month and day-of-week are
restricted, a day matching EITHER fires), plus Vixie cron's rule for fixed-time jobs in
the repeated hour of a fall-back transition: they fire once, at the first occurrence.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from promptpilot.common import task_names
from workflows.engine.errors import InputValidationError
from workflows.engine.inputs import validate_inputs
from workflows.models import ExecutionStatus, TriggerType, Workflow, WorkflowExecution, WorkflowVersion
from workflows.services.definitions import workflow_definition_snapshot
from workflows.signals import execution_finished

from ..errors import TriggerConfigInvalid, TriggerInputInvalid, TriggerRejected
from ..models import InvocationStatus, TriggerKind, WorkflowTrigger
from .firing import first_accepted_invocation, invocation_record, trigger_fire

logger = logging.getLogger(__name__)

CONFIG_KEYS = {"cron", "timezone", "input", "overlap", "pause_after_failures"}
DEFAULT_TIMEZONE = "UTC"
PREVIEW_COUNT = 5
MAX_PAUSE_AFTER_FAILURES = 1000
FIRE_SCHEDULE_TASK = task_names.FIRE_SCHEDULE
PERIODIC_TASK_PREFIX = "trigger:"
# A beat mirror message older than this is dropped: the next one (or the scheduler) covers it.
PERIODIC_TASK_EXPIRE_SECONDS = 50
SWEEP_BATCH = 100
# A sweep stops taking new batches after this long; the next tick (1 s later) goes on.
SWEEP_BUDGET_SECONDS = 20.0
# pg advisory lock ids of the sweeper slots: SWEEP_LOCK_KEY + 0 .. + sweepers - 1 (see _sweeper_slot)
SWEEP_LOCK_KEY = 0x7C4ED5
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_NAMES = re.compile(r"[A-Za-z]{3}")
_PLAIN = re.compile(r"^[0-9*?/,\-]+$")
UNFINISHED = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)


class Overlap(models.TextChoices):
    """What a due slot does while the previous run of the same trigger is still going."""

    SKIP = "skip", "Skip the slot (recorded as a SKIPPED invocation)"
    ALLOW = "allow", "Start another run anyway"
    BUFFER_ONE = "buffer_one", "Keep one run waiting; start it when the current one ends"


class ScheduleInvalid(ValueError):
    """A cron expression or time zone that cannot be used; ``field`` names the config key."""

    def __init__(self, message: str, field: str = "config.cron") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _second_occurrence(moment: datetime) -> bool:
    """True for the later of the two instants that share an ambiguous wall time (fall back)."""
    return bool(moment.fold) and moment.replace(fold=0).utcoffset() != moment.utcoffset()


@dataclass(frozen=True)
class Schedule:
    """A parsed, validated schedule. All times it returns are aware, in UTC."""

    cron: str
    fields: tuple[str, ...]
    timezone: str
    tz: ZoneInfo = field(repr=False, compare=False)

    @property
    def expression(self) -> str:
        return " ".join(self.fields)

    @property
    def fixed_time(self) -> bool:
        """Vixie cron's "job that runs at a particular time": no ``*`` in minute or hour.
        Such a job fires once in the repeated hour of a fall-back transition."""
        return "*" not in self.fields[0] and "*" not in self.fields[1]

    def _walk(self, start: datetime, *, backwards: bool = False) -> datetime:
        iterator = croniter(self.expression, start.astimezone(self.tz))
        for _ in range(8):
            candidate = iterator.get_prev(datetime) if backwards else iterator.get_next(datetime)
            if self.fixed_time and _second_occurrence(candidate):
                continue  # the same wall time already fired an hour earlier
            return candidate.astimezone(UTC)
        raise CroniterBadDateError(f"no usable time near {start.isoformat()}")

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after ``moment``."""
        return _next_after(self, moment)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last scheduled time at or before ``moment`` (times are whole minutes)."""
        return self._walk(moment.replace(microsecond=0) + timedelta(seconds=1), backwards=True)

    def upcoming(self, start: datetime, count: int) -> list[datetime]:
        """``start`` (itself a scheduled time) and the ``count - 1`` times after it: the
        chain the scheduler walks, one ``next_after`` at a time."""
        times = [start]
        while len(times) < count:
            times.append(self.next_after(times[-1]))
        return times

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)


@lru_cache(maxsize=8192)
def _next_after(schedule: Schedule, moment: datetime) -> datetime:
    # A busy minute asks the same question for every trigger with the same cron and time
    # zone (croniter takes about 0.3 ms per answer); the answer never changes.
    return schedule._walk(moment)


def _check_field(position: int, value: str) -> None:
    plain = _NAMES.sub("", value) if position >= 3 else value
    if not _PLAIN.match(plain or "0"):
        raise ScheduleInvalid(
            f'cron {CRON_FIELD_NAMES[position]} field "{value}" uses syntax that is not supported here (L, W, #, H '
            'and R are not). Use numbers, names (JAN, MON), "*", ranges "1-5", lists "1,15" and steps "*/15".'
        )


def schedule_parse(*, cron: Any, timezone_name: Any = DEFAULT_TIMEZONE) -> Schedule:
    """A ``Schedule`` from a cron expression and an IANA time zone name. Raises
    ScheduleInvalid naming the problem (bad syntax, unsupported syntax, unknown zone)."""
    if not isinstance(cron, str) or not cron.strip():
        raise ScheduleInvalid(
            'cron is required: five fields "minute hour day-of-month month day-of-week", e.g. "0 9 * * 1-5".'
        )
    text = " ".join(cron.split())
    expression = CRON_MACROS.get(text.lower(), text)
    if expression.startswith("@"):
        raise ScheduleInvalid(f'cron "{text}" is not a known macro (use one of {", ".join(sorted(CRON_MACROS))}).')
    fields = tuple(expression.split(" "))
    if len(fields) != 5:
        raise ScheduleInvalid(
            f'cron "{text}" has {len(fields)} field(s); it needs exactly 5: minute hour day-of-month month '
            "day-of-week (no seconds or years)."
        )
    for position, value in enumerate(fields):
        _check_field(position, value)
    if not isinstance(timezone_name, str) or not timezone_name:
        raise ScheduleInvalid('timezone must be an IANA time zone name such as "Europe/Paris" or "UTC".',
                              "config.timezone")
    try:
        tz = ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleInvalid(
            f'Unknown time zone "{timezone_name}": use an IANA name such as "Europe/Paris", "America/New_York" or '
            '"UTC".', "config.timezone",
        ) from None
    try:
        croniter(expression)
    except (CroniterError, ValueError, TypeError) as exc:
        raise ScheduleInvalid(f'cron "{text}" is not a valid cron expression: {exc}.') from None
    return Schedule(cron=text, fields=fields, timezone=timezone_name, tz=tz)


@lru_cache(maxsize=4096)
def _parse_cached(cron: str, timezone_name: str) -> Schedule:
    return schedule_parse(cron=cron, timezone_name=timezone_name)


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """The trigger config's schedule (parsed once per distinct cron and zone, per process)."""
    cron, timezone_name = config.get("cron"), config.get("timezone") or DEFAULT_TIMEZONE
    if isinstance(cron, str) and isinstance(timezone_name, str):
        return _parse_cached(cron, timezone_name)
    return schedule_parse(cron=cron, timezone_name=timezone_name)


def _config_error(message: str, field: str) -> TriggerConfigInvalid:
    return TriggerConfigInvalid(message, {"errors": {field: [message]}})


def schedule_config_validate(*, config: dict[str, Any], workflow: Workflow) -> dict[str, Any]:
    """The config of a SCHEDULED trigger on ``workflow``, checked and with defaults filled
    in. Raises TriggerConfigInvalid naming the bad key. ``input`` is validated against the
    workflow's variables now, so a schedule never fires with input that cannot run."""
    try:
        schedule = schedule_from_config(config)
    except ScheduleInvalid as exc:
        raise _config_error(exc.message, exc.field) from None
    try:
        schedule.next_after(timezone.now())
    except CroniterError:
        raise _config_error(f'cron "{schedule.cron}" never fires: no date matches it (e.g. February 30th).',
                            "config.cron") from None
    overlap = Overlap.SKIP if config.get("overlap") is None else config["overlap"]
    if overlap not in Overlap.values:
        raise _config_error(f'overlap must be one of {", ".join(Overlap.values)} (got {json.dumps(overlap)}).',
                            "config.overlap")
    limit = config.get("pause_after_failures")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= MAX_PAUSE_AFTER_FAILURES):
        raise _config_error(
            f"pause_after_failures must be a whole number from 1 to {MAX_PAUSE_AFTER_FAILURES}, or null for never "
            f"(got {json.dumps(limit)}).", "config.pause_after_failures",
        )
    inputs = config.get("input")
    inputs = {} if inputs is None else inputs
    if not isinstance(inputs, dict):
        raise _config_error('input must be a JSON object {"variable": value}.', "config.input")
    variables = workflow_definition_snapshot(workflow=workflow)["variables"]
    try:
        validate_inputs(variables, inputs)
    except InputValidationError as exc:
        message = "input does not fit the workflow's variables: " + "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
        raise TriggerConfigInvalid(
            message, {"errors": {f"config.input.{name}": [problem] for name, problem in exc.errors.items()}}
        ) from None
    return {"cron": schedule.cron, "timezone": schedule.timezone, "input": inputs, "overlap": overlap,
            "pause_after_failures": limit}


# --- preview ---------------------------------------------------------------------------


def schedule_upcoming(*, trigger: WorkflowTrigger, count: int = PREVIEW_COUNT) -> list[datetime]:
    """The next ``count`` times (UTC) this trigger will fire: ``next_run_at`` and the chain
    after it. Empty while the trigger is inactive (or its stored config is unusable)."""
    if trigger.type != TriggerKind.SCHEDULED or not trigger.is_active or trigger.next_run_at is None:
        return []
    try:
        return schedule_from_config(trigger.config).upcoming(trigger.next_run_at, count)
    except (ScheduleInvalid, CroniterError):
        return []


def schedule_next_runs(*, trigger: WorkflowTrigger, count: int = PREVIEW_COUNT) -> list[dict[str, str]] | None:
    """``[{"utc", "local"}]`` for the next ``count`` runs (ISO 8601); None for other types."""
    if trigger.type != TriggerKind.SCHEDULED:
        return None
    times = schedule_upcoming(trigger=trigger, count=count)
    if not times:
        return []
    tz = ZoneInfo(trigger.config.get("timezone") or DEFAULT_TIMEZONE)
    return [{"utc": iso_utc(moment), "local": moment.astimezone(tz).isoformat()} for moment in times]


# --- lifecycle (called by services/triggers.py) ----------------------------------------


def periodic_task_name(trigger_id: Any) -> str:
    return f"{PERIODIC_TASK_PREFIX}{trigger_id}"


def _beat_fields(schedule: Schedule) -> dict[str, str]:
    """Crontab fields for the mirror. Celery's parser takes most fields as written; where
    it does not (``7`` for Sunday, ``?``), croniter's expanded values are used."""
    from celery.schedules import crontab

    names = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    raw = dict(zip(names, schedule.fields, strict=True))
    try:
        crontab(**raw)
        return raw
    except ValueError:
        expanded = croniter(schedule.expression).expanded
        return {name: "*" if values == ["*"] else ",".join(str(v) for v in values)
                for name, values in zip(names, expanded, strict=True)}


def mirror_tasks_enabled() -> bool:
    """PROMPTPILOT_SCHEDULE_MIRROR_TASKS: whether the ``trigger:<id>`` records are enabled
    while their trigger is active. PromptPilot's beat scheduler never runs them either
    way; off is for a beat on django-celery-beat's stock scheduler, which would otherwise
    send one task per record per scheduled time, comparing its whole schedule each time
    (milliseconds per entry at every busy minute: bench/README.md, "Schedules")."""
    return bool(settings.PROMPTPILOT.get("SCHEDULE_MIRROR_TASKS", True))


def schedule_sweepers() -> int:
    """PROMPTPILOT_SCHEDULE_SWEEPERS: how many sweeps may fire due slots at once."""
    return max(1, int(settings.PROMPTPILOT.get("SCHEDULE_SWEEPERS", 2)))


def schedule_periodic_task_sync(*, trigger: WorkflowTrigger, schedule: Schedule | None = None) -> None:
    """Create or update the trigger's ``PeriodicTask`` (enabled = trigger active, unless
    mirror tasks are switched off)."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    schedule = schedule or schedule_from_config(trigger.config)
    fields = {**_beat_fields(schedule), "timezone": schedule.timezone}
    crontab = CrontabSchedule.objects.filter(**fields).order_by("id").first() or CrontabSchedule.objects.create(**fields)
    PeriodicTask.objects.update_or_create(
        name=periodic_task_name(trigger.pk),
        defaults={
            "task": FIRE_SCHEDULE_TASK,
            "args": json.dumps([str(trigger.pk)]),
            "kwargs": "{}",
            "crontab": crontab,
            "interval": None,
            "solar": None,
            "clocked": None,
            "enabled": trigger.is_active and mirror_tasks_enabled(),
            "expire_seconds": PERIODIC_TASK_EXPIRE_SECONDS,
            "description": (
                f'Record of SCHEDULED trigger "{trigger.name}" ({schedule.cron} in {schedule.timezone}). Managed by '
                "PromptPilot: edit the trigger, not this task. The triggers-scheduler entry fires the trigger and "
                "updates this task's last run; PromptPilot's beat scheduler does not send this task itself. Under "
                "django-celery-beat's stock scheduler it fires only a slot croniter says is due, with the same "
                "delivery id, so both paths together start one execution per slot."
            ),
        },
    )


def schedule_sync_all(*, now: datetime | None = None) -> dict[str, int]:
    """Reconcile every SCHEDULED trigger with beat (``manage.py sync_schedules``): create or
    update each ``trigger:<id>`` task (after PROMPTPILOT_SCHEDULE_MIRROR_TASKS changed, or
    triggers written around the services), give active ones without ``next_run_at`` their
    next run, and delete periodic tasks whose trigger is gone."""
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    now = now or timezone.now()
    counts = {"synced": 0, "unusable": 0, "orphans_deleted": 0}
    ids = set()
    for trigger in WorkflowTrigger.objects.filter(type=TriggerKind.SCHEDULED).iterator():
        ids.add(periodic_task_name(trigger.pk))
        with transaction.atomic():
            try:
                schedule = schedule_from_config(trigger.config)
                if trigger.is_active and trigger.next_run_at is None:
                    trigger.next_run_at = schedule.next_after(now)
                    WorkflowTrigger.objects.filter(pk=trigger.pk).update(next_run_at=trigger.next_run_at)
                schedule_periodic_task_sync(trigger=trigger, schedule=schedule)
                counts["synced"] += 1
            except (ScheduleInvalid, CroniterError):
                schedule_periodic_task_disable(trigger_id=trigger.pk)
                counts["unusable"] += 1
    orphans = PeriodicTask.objects.filter(name__startswith=PERIODIC_TASK_PREFIX).exclude(name__in=ids)
    counts["orphans_deleted"], _ = orphans.delete()
    PeriodicTasks.update_changed()  # bulk changes: tell beat to reload
    return counts


def schedule_periodic_task_delete(*, trigger_id: Any) -> int:
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    deleted, _ = PeriodicTask.objects.filter(name=periodic_task_name(trigger_id)).delete()
    if deleted:
        PeriodicTasks.update_changed()  # a queryset delete sends no signal to beat
    return deleted


def schedule_sync(*, trigger: WorkflowTrigger, previous: dict[str, Any] | None = None,
                  now: datetime | None = None) -> WorkflowTrigger:
    """Bring ``next_run_at``, the pause state and the beat mirror in line with the trigger
    as just saved. ``previous`` is ``{"config", "is_active"}`` before an update (None on
    create). A new cron or time zone, or (re-)enabling, computes ``next_run_at`` from now:
    slots missed while disabled are not replayed. Re-enabling clears a pause."""
    now = now or timezone.now()
    try:
        schedule = schedule_from_config(trigger.config)
    except ScheduleInvalid as exc:
        if trigger.is_active:  # only a config stored around the services gets here
            raise _config_error(f"The stored schedule cannot be used: {exc.message}", exc.field) from None
        schedule = None
    was_active = bool(previous and previous.get("is_active"))
    old = (previous or {}).get("config") or {}
    changed = previous is None or (old.get("cron"), old.get("timezone")) != (
        trigger.config.get("cron"), trigger.config.get("timezone"))
    updates: dict[str, Any] = {}
    if not trigger.is_active:
        updates.update(next_run_at=None, buffered_slot_at=None)
    elif schedule is not None and (changed or not was_active or trigger.next_run_at is None):
        updates["next_run_at"] = schedule.next_after(now)
    if trigger.is_active and not was_active:
        updates.update(consecutive_failures=0, paused_at=None, paused_reason="")
    if updates:
        WorkflowTrigger.objects.filter(pk=trigger.pk).update(**updates)
        for name, value in updates.items():
            setattr(trigger, name, value)
    if schedule is not None:
        schedule_periodic_task_sync(trigger=trigger, schedule=schedule)
    else:
        schedule_periodic_task_disable(trigger_id=trigger.pk)
    logger.info("schedule.synced", extra={"trigger_id": str(trigger.pk), "active": trigger.is_active,
                                          "next_run_at": iso_utc(trigger.next_run_at) if trigger.next_run_at else None})
    return trigger


# --- firing ----------------------------------------------------------------------------


@dataclass
class SweepReport:
    fired: int = 0
    duplicate: int = 0
    skipped: int = 0
    buffered: int = 0
    failed: int = 0
    paused: int = 0
    missed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


# The status of a trigger's latest scheduled run, read with the due rows of a sweep batch
# (one statement for the batch instead of one per trigger); see _busy.
LATEST_RUN_STATUS = "latest_scheduled_run_status"
LATEST_VERSION_ID = "latest_version_id"  # annotated by a sweep batch: the version a run pins


def _latest_run_status() -> Subquery:
    return Subquery(
        WorkflowExecution.objects.filter(trigger_id=OuterRef("pk"), trigger_type=TriggerType.SCHEDULED)
        .order_by("-created_at").values("status")[:1]
    )


def _latest_version_id() -> Subquery:
    return Subquery(WorkflowVersion.objects.filter(workflow_id=OuterRef("workflow_id")).order_by("-number")
                    .values("pk")[:1])


def _busy(trigger: WorkflowTrigger) -> bool:
    """Whether the previous scheduled run of ``trigger`` (its latest) is still going.
    A trigger fetched by a sweep batch carries that status already (``LATEST_RUN_STATUS``)."""
    if hasattr(trigger, LATEST_RUN_STATUS):
        return getattr(trigger, LATEST_RUN_STATUS) in UNFINISHED
    status = (
        WorkflowExecution.objects.filter(trigger_id=trigger.pk, trigger_type=TriggerType.SCHEDULED)
        .order_by("-created_at").values_list("status", flat=True).first()
    )
    return status in UNFINISHED


def _slot_facts(schedule: Schedule, slot: datetime, source: str) -> tuple[dict, dict]:
    facts = {"scheduled_for": iso_utc(slot), "scheduled_for_local": schedule.local(slot).isoformat(),
             "timezone": schedule.timezone}
    return facts, {**facts, "source": source}


def _fire_slot(trigger: WorkflowTrigger, schedule: Schedule, slot: datetime, *, source: str,
               report: SweepReport, may_buffer: bool = True) -> None:
    """Fire one scheduled time of ``trigger`` (its row locked by the caller), honouring overlap."""
    payload, meta = _slot_facts(schedule, slot, source)
    delivery_id = f"schedule:{meta['scheduled_for']}"
    overlap = trigger.config.get("overlap") or Overlap.SKIP
    # A slot that already started its run is a DUPLICATE (below), never SKIPPED.
    if overlap != Overlap.ALLOW and _busy(trigger) and first_accepted_invocation(trigger, delivery_id) is None:
        if overlap == Overlap.BUFFER_ONE and may_buffer and trigger.buffered_slot_at is None:
            trigger.buffered_slot_at = slot
            report.buffered += 1
            logger.info("schedule.buffered", extra={"trigger_id": str(trigger.pk), "scheduled_for": meta["scheduled_for"]})
            return
        reason = ("the previous run of this trigger is still going (overlap: skip)" if overlap == Overlap.SKIP else
                  "the previous run is still going and another run is already waiting (overlap: buffer_one)")
        invocation_record(
            trigger=trigger, status=InvocationStatus.SKIPPED, verified=True, payload=payload,
            error=f"Scheduled time {meta['scheduled_for']} skipped: {reason}.", request_meta=meta,
        )
        report.skipped += 1
        return
    try:
        invocation = trigger_fire(
            trigger=trigger, inputs=trigger.config.get("input") or {}, payload=payload, delivery_id=delivery_id,
            verified=True, actor=None, request_meta=meta, metadata=payload,
            # A sweep batch read the latest version with the trigger, and saves last_triggered_at
            # with the batch's other changes (_process).
            version_id=getattr(trigger, LATEST_VERSION_ID, None), touch_last_triggered=False,
        )
        if invocation.was_duplicate:
            report.duplicate += 1
        else:
            report.fired += 1
            if hasattr(trigger, LATEST_RUN_STATUS):  # the run just started is now the latest
                setattr(trigger, LATEST_RUN_STATUS, ExecutionStatus.PENDING)
    except (TriggerInputInvalid, TriggerRejected) as exc:
        # Recorded by trigger_fire (INVALID_INPUT / REJECTED); the schedule goes on.
        report.failed += 1
        logger.warning("schedule.fire_refused", extra={"trigger_id": str(trigger.pk), "error": exc.message})


def _pause(trigger: WorkflowTrigger, reason: str, now: datetime) -> None:
    trigger.is_active = False
    trigger.paused_at = now
    trigger.paused_reason = reason
    trigger.next_run_at = None
    trigger.buffered_slot_at = None
    logger.warning("schedule.paused", extra={"trigger_id": str(trigger.pk), "reason": reason})


def _record_missed(trigger: WorkflowTrigger, schedule: Schedule, first: datetime, latest: datetime, source: str,
                   report: SweepReport) -> None:
    """One SKIPPED invocation for all the times the scheduler missed before ``latest``
    (it was down, or more than a period behind): they are not replayed."""
    payload, meta = _slot_facts(schedule, first, source)
    payload["missed_until"] = iso_utc(latest)
    invocation_record(
        trigger=trigger, status=InvocationStatus.SKIPPED, verified=True, payload=payload, request_meta=meta,
        error=f"Scheduled times from {payload['scheduled_for']} to before {payload['missed_until']} were missed while "
              "the scheduler was down or behind; they are not replayed, only the latest one fires.",
    )
    report.missed += 1
    logger.warning("schedule.missed", extra={"trigger_id": str(trigger.pk), "from": payload["scheduled_for"],
                                             "until": payload["missed_until"]})


def _due_slot(schedule: Schedule, next_run_at: datetime, now: datetime) -> tuple[datetime, datetime]:
    """``(slot to fire, next_run_at after it)``. On time, the slot is ``next_run_at``; if
    the scheduler itself was down across several slots, only the latest missed one."""
    slot, following = next_run_at, schedule.next_after(next_run_at)
    if following <= now:
        latest = schedule.latest_at_or_before(now)
        slot = latest if next_run_at <= latest <= now else slot
        following = schedule.next_after(slot)
        while following <= now:  # defensive: croniter's prev and next disagreed
            slot, following = following, schedule.next_after(following)
    return slot, following


SAVED_FIELDS = ("next_run_at", "buffered_slot_at", "is_active", "paused_at", "paused_reason", "last_triggered_at")


def _process(trigger: WorkflowTrigger, now: datetime, source: str, report: SweepReport, *,
             fire_due: bool = True, changed: list[WorkflowTrigger] | None = None) -> None:
    """Handle one locked trigger: start its buffered run if it may, fire its due slot
    (unless ``fire_due`` is False: the run-ended receiver leaves that to the scheduler).
    Its new state is saved at once, or appended to ``changed`` for the caller to save in
    bulk (a sweep batch, in the same transaction)."""
    before = (trigger.next_run_at, trigger.buffered_slot_at, trigger.is_active)
    fired_before = report.fired
    try:
        schedule = schedule_from_config(trigger.config)
        if trigger.buffered_slot_at is not None and not _busy(trigger):
            slot, trigger.buffered_slot_at = trigger.buffered_slot_at, None
            _fire_slot(trigger, schedule, slot, source="buffer", report=report, may_buffer=False)
        if fire_due and trigger.next_run_at is not None and trigger.next_run_at <= now:
            first = trigger.next_run_at
            slot, trigger.next_run_at = _due_slot(schedule, first, now)
            if slot != first:
                _record_missed(trigger, schedule, first, slot, source, report)
            _fire_slot(trigger, schedule, slot, source=source, report=report)
    except (ScheduleInvalid, CroniterError) as exc:
        # Config written around the services (admin, SQL): stop instead of failing every second.
        _pause(trigger, f"The schedule cannot be computed: {getattr(exc, 'message', exc)}", now)
        report.paused += 1
    if report.fired != fired_before:
        trigger.last_triggered_at = now  # one value per batch, so a batch's triggers share one UPDATE
    if (trigger.next_run_at, trigger.buffered_slot_at, trigger.is_active) != before or report.fired != fired_before:
        if changed is not None:
            changed.append(trigger)
        else:
            WorkflowTrigger.objects.filter(pk=trigger.pk).update(**{name: getattr(trigger, name)
                                                                    for name in SAVED_FIELDS})
    if not trigger.is_active:
        schedule_periodic_task_disable(trigger_id=trigger.pk)


def schedule_periodic_task_disable(*, trigger_id: Any) -> None:
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.filter(name=periodic_task_name(trigger_id), enabled=True).first()
    if task is not None:
        task.enabled = False
        task.save()


@contextmanager
def _sweeper_slot(exclusive: bool) -> Iterator[bool]:
    """On PostgreSQL, at most ``schedule_sweepers()`` full sweeps at a time: each holds one
    of that many session advisory locks. Sweeps in parallel share a busy minute (each
    batch locks rows the others skip); beyond the limit a tick has nothing to add, and
    the worker's other processes stay free to run the workflows the sweeps start."""
    if not exclusive or connection.vendor != "postgresql":
        yield True
        return
    held = None
    with connection.cursor() as cursor:
        for key in range(SWEEP_LOCK_KEY, SWEEP_LOCK_KEY + schedule_sweepers()):
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if cursor.fetchone()[0]:
                held = key
                break
    try:
        yield held is not None
    finally:
        if held is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [held])


def schedule_fire_due(*, now: datetime | None = None, trigger_id: Any = None, batch: int = SWEEP_BATCH,
                      source: str = "scheduler", exclusive: bool = True,
                      on_backlog: Callable[[], None] | None = None) -> SweepReport:
    """Fire every due slot of active SCHEDULED triggers (only ``trigger_id``'s if given).

    Safe to run from several processes at once: each batch locks its rows with SKIP
    LOCKED and advances ``next_run_at`` in the same transaction, and the delivery id
    ``schedule:<slot>`` is unique per trigger. A full sweep returns at once if
    ``schedule_sweepers()`` others are running (``exclusive``; see ``_sweeper_slot``).
    ``on_backlog`` is called once, when the first batch comes back full (more may be due
    than this sweep alone fires quickly), before that batch is fired. ``now`` is
    injectable for tests; by default each batch reads the clock.
    """
    if trigger_id is None:
        with _sweeper_slot(exclusive) as slot:
            if not slot:
                return SweepReport()
            return _sweep(now=now, trigger_id=None, batch=batch, source=source, on_backlog=on_backlog)
    return _sweep(now=now, trigger_id=trigger_id, batch=batch, source=source)


def _fire_batch(triggers: Any, now: datetime, source: str, report: SweepReport) -> None:
    """Process locked ``triggers`` (one transaction, the caller's), then save what changed
    in a few UPDATEs, and stamp the fired ones' ``trigger:<id>`` records as run now."""
    from django_celery_beat.models import PeriodicTask

    changed: list[WorkflowTrigger] = []
    fired: list[str] = []
    for trigger in triggers:
        before = report.fired
        _process(trigger, now, source, report, changed=changed)
        if report.fired != before:
            fired.append(periodic_task_name(trigger.pk))
    # One UPDATE per distinct new state: the triggers of a batch mostly share their next
    # time (same cron, same minute), and this is far cheaper than bulk_update's CASE.
    same_state: dict[tuple, list] = {}
    for trigger in changed:
        same_state.setdefault(tuple(getattr(trigger, name) for name in SAVED_FIELDS), []).append(trigger.pk)
    for state, ids in same_state.items():
        WorkflowTrigger.objects.filter(pk__in=ids).update(**dict(zip(SAVED_FIELDS, state, strict=True)))
    if fired:
        # A queryset update: beat's change marker is not touched, so beat does not reload.
        PeriodicTask.objects.filter(name__in=fired).update(last_run_at=timezone.now(),
                                                          total_run_count=F("total_run_count") + 1)


def _sweep(*, now: datetime | None, trigger_id: Any, batch: int, source: str,
           on_backlog: Callable[[], None] | None = None) -> SweepReport:
    report = SweepReport()
    started = time.monotonic()
    scheduled = WorkflowTrigger.objects.filter(type=TriggerKind.SCHEDULED, is_active=True)
    if trigger_id is not None:
        scheduled = scheduled.filter(pk=trigger_id)
        if not scheduled.filter(Q(next_run_at__lte=now or timezone.now()) | Q(buffered_slot_at__isnull=False)).exists():
            return report  # the usual answer of a periodic-task call: the scheduler got there first
    locked = (scheduled.select_for_update(skip_locked=True, of=("self",)).select_related("workflow")
              .annotate(**{LATEST_RUN_STATUS: _latest_run_status(), LATEST_VERSION_ID: _latest_version_id()}))
    # Runs waiting under buffer_one whose receiver was missed (worker lost after commit).
    # The partial index trigger_schedule_buffered holds only such rows: usually none.
    if scheduled.filter(buffered_slot_at__isnull=False).exists():
        with transaction.atomic():
            current = now or timezone.now()
            _fire_batch(locked.filter(buffered_slot_at__isnull=False).exclude(next_run_at__lte=current)[:batch],
                        current, source, report)
    first = True
    while True:
        with transaction.atomic():
            current = now or timezone.now()
            due = list(locked.filter(next_run_at__lte=current).order_by("next_run_at")[:batch])
            if first and len(due) == batch and on_backlog is not None:
                on_backlog()  # before firing: helpers skip these rows and take the next ones
            first = False
            _fire_batch(due, current, source, report)
        if len(due) < batch or trigger_id is not None or time.monotonic() - started > SWEEP_BUDGET_SECONDS:
            break
    if any(vars(report).values()):
        logger.info("schedule.sweep", extra=report.as_dict())
    return report


def schedule_next_due(*, within: timedelta, now: datetime | None = None, count_up_to: int = 0,
                      ) -> tuple[datetime | None, int]:
    """The earliest ``next_run_at`` in ``(now, now + within]``, if any, and how many are due
    in that window (counted up to ``count_up_to``; 0: not counted). Indexed reads."""
    now = now or timezone.now()
    upcoming = WorkflowTrigger.objects.filter(type=TriggerKind.SCHEDULED, is_active=True, next_run_at__gt=now,
                                              next_run_at__lte=now + within)
    soonest = upcoming.order_by("next_run_at").values_list("next_run_at", flat=True).first()
    if soonest is None or count_up_to <= 0:
        return soonest, int(soonest is not None)
    return soonest, upcoming.values("pk")[:count_up_to].count()


def schedule_sweeps_for(*, due: int) -> int:
    """How many sweeps to start for ``due`` slots: one per batch, up to the limit."""
    return max(1, min(schedule_sweepers(), -(-due // SWEEP_BATCH)))


# --- after a run ends ------------------------------------------------------------------


def schedule_execution_finished(*, execution: WorkflowExecution, now: datetime | None = None) -> None:
    """Count consecutive failures (pausing at ``pause_after_failures``) and start the run
    waiting under ``buffer_one``. For scheduled runs only; called after the run commits."""
    if execution.trigger_id is None or execution.trigger_type != TriggerType.SCHEDULED:
        return
    row = (WorkflowTrigger.objects.filter(pk=execution.trigger_id, type=TriggerKind.SCHEDULED)
           .values_list("consecutive_failures", "buffered_slot_at").first())
    if row is None:
        return
    if execution.status != ExecutionStatus.FAILED and row[1] is None:
        # The common end of a run: no failure to count, no run waiting. No lock needed.
        if execution.status == ExecutionStatus.COMPLETED and row[0]:
            WorkflowTrigger.objects.filter(pk=execution.trigger_id).update(consecutive_failures=0)
        return
    now = now or timezone.now()
    with transaction.atomic():
        trigger = (WorkflowTrigger.objects.select_for_update(of=("self",)).select_related("workflow")
                   .filter(pk=execution.trigger_id, type=TriggerKind.SCHEDULED).first())
        if trigger is None:
            return
        if execution.status == ExecutionStatus.FAILED:
            trigger.consecutive_failures += 1
        elif execution.status == ExecutionStatus.COMPLETED:
            trigger.consecutive_failures = 0
        limit = trigger.config.get("pause_after_failures")
        report = SweepReport()
        if trigger.is_active and limit and trigger.consecutive_failures >= limit:
            message = ((execution.error or {}).get("message") or "")[:500]
            _pause(trigger, f"Paused after {trigger.consecutive_failures} consecutive failed runs (the last: "
                            f"execution {execution.pk}{': ' + message if message else ''}). Enable the trigger "
                            "to resume.", now)
        WorkflowTrigger.objects.filter(pk=trigger.pk).update(
            consecutive_failures=trigger.consecutive_failures, is_active=trigger.is_active,
            paused_at=trigger.paused_at, paused_reason=trigger.paused_reason, next_run_at=trigger.next_run_at,
            buffered_slot_at=trigger.buffered_slot_at,
        )
        if trigger.is_active and trigger.buffered_slot_at is not None:
            _process(trigger, now, "buffer", report, fire_due=False)
        elif not trigger.is_active:
            schedule_periodic_task_disable(trigger_id=trigger.pk)


# --- receivers (connected by TriggersConfig.ready) -------------------------------------


@receiver(execution_finished, sender=WorkflowExecution, dispatch_uid="triggers.schedules.execution_finished")
def _on_execution_finished(sender, execution: WorkflowExecution, **kwargs) -> None:
    if execution.trigger_type == TriggerType.SCHEDULED and execution.trigger_id is not None:
        schedule_execution_finished(execution=execution)


@receiver(post_delete, sender=WorkflowTrigger, dispatch_uid="triggers.schedules.periodic_task")
def _on_trigger_deleted(sender, instance: WorkflowTrigger, **kwargs) -> None:
    """No orphaned periodic task, however the trigger goes (API, admin, workflow cascade)."""
    if instance.type == TriggerKind.SCHEDULED:
        schedule_periodic_task_delete(trigger_id=instance.pk)
