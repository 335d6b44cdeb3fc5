"""Readiness: can this instance take work? The database, the broker and a worker answer.

``/healthz`` (liveness) asks only whether the process and its database answer; ``/readyz``
asks all three parts, because a run accepted while no worker consumes the queue waits
silently. The worker check is a Celery ``control.ping`` (it proves a worker consumes from
this broker, which a heartbeat row in the database would not), answered by the first
worker that replies, and cached for a few seconds so that probes do not flood the broker.

Probes come every few seconds, so a part that stays down is not logged at each one:
``ProbeLog`` writes one WARNING when the set of failing parts changes (naming them and
each one's cause) and one INFO when all answer again.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"
UNKNOWN = "unknown"

PARTS = ("database", "broker", "worker")


@dataclass(frozen=True)
class PartState:
    state: str
    detail: str = ""
    # The exception's text (host names, ports): for the log, never in the anonymous answer.
    cause: str = ""

    def as_json(self) -> dict:
        return {"state": self.state, "detail": self.detail} if self.detail else {"state": self.state}


@dataclass(frozen=True)
class Readiness:
    parts: dict[str, PartState] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(part.state == OK for part in self.parts.values())

    def as_json(self) -> dict:
        return {
            "status": OK if self.ready else ERROR,
            "failing": [name for name, part in self.parts.items() if part.state != OK],
            "checks": {name: part.as_json() for name, part in self.parts.items()},
        }


def database_check() -> PartState:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ready", never a 500
        return PartState(ERROR, f"the database did not answer ({type(exc).__name__})", _cause(exc))
    return PartState(OK)


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _celery_app():
    from promptpilot.celery import app

    return app


def broker_check() -> PartState:
    try:
        with _celery_app().connection_for_write() as conn:
            conn.connect()  # one attempt; Redis answers a PING when the channel opens
            conn.default_channel  # noqa: B018 - opening the channel is the check
    except Exception as exc:
        return PartState(ERROR, f"the broker did not answer ({type(exc).__name__})", _cause(exc))
    return PartState(OK)


def _ping_workers(timeout: float) -> PartState:
    try:
        replies = _celery_app().control.ping(timeout=timeout, limit=1)
    except Exception as exc:
        return PartState(ERROR, f"pinging the workers failed ({type(exc).__name__})", _cause(exc))
    if not replies:
        return PartState(ERROR, f"no worker answered a ping within {timeout:g} s")
    # Workers' host names stay out of an anonymous answer; `celery inspect ping` lists them.
    return PartState(OK)


class _WorkerCheckCache:
    """The last worker check of this process, reused for ``READYZ_CACHE_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: PartState | None = None
        self._checked_at = 0.0

    def get(self) -> PartState:
        config = settings.PROMPTPILOT
        with self._lock:  # one ping at a time per process, however many probes arrive
            if self._value is None or time.monotonic() - self._checked_at >= config["READYZ_CACHE_SECONDS"]:
                self._value = _ping_workers(config["READYZ_WORKER_TIMEOUT_SECONDS"])
                self._checked_at = time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._value = None


worker_check_cache = _WorkerCheckCache()


class ProbeLog:
    """What one probe (``readyz``, ``healthz``) of this process last reported, so that only
    changes are logged: ``readiness.failing`` (WARNING) when the set of failing parts
    becomes non-empty or changes, ``readiness.recovered`` (INFO) when it empties."""

    def __init__(self, probe: str) -> None:
        self.probe = probe
        self._lock = threading.Lock()
        self._failing: tuple[str, ...] = ()

    def observe(self, report: Readiness) -> None:
        failing = tuple(name for name, part in report.parts.items() if part.state != OK)
        with self._lock:
            previous, self._failing = self._failing, failing
        if failing == previous:
            return
        if failing:
            causes = {name: report.parts[name].cause or report.parts[name].detail for name in failing}
            logger.warning("readiness.failing", extra={"probe": self.probe, "failing": list(failing),
                                                       "previously_failing": list(previous), "causes": causes})
        else:
            logger.info("readiness.recovered", extra={"probe": self.probe, "previously_failing": list(previous)})

    def clear(self) -> None:
        with self._lock:
            self._failing = ()


readyz_log = ProbeLog("readyz")
healthz_log = ProbeLog("healthz")


def readiness_check() -> Readiness:
    """The three parts, checked now (the worker's answer possibly cached); a change in what
    fails is logged once (``readyz_log``)."""
    database = database_check()
    broker = broker_check()
    if broker.state == OK:
        worker = worker_check_cache.get()
    else:
        worker = PartState(UNKNOWN, "not asked: the broker is down")
    report = Readiness({"database": database, "broker": broker, "worker": worker})
    readyz_log.observe(report)
    return report


def liveness_check() -> Readiness:
    """The database alone (``/healthz``); a change is logged once (``healthz_log``)."""
    report = Readiness({"database": database_check()})
    healthz_log.observe(report)
    return report
