"""Prometheus counters and histograms, incremented where each event happens.

Each one is recorded by the one function that owns its event (the transitions, the
orchestration, the reaper, the trigger firing), right where that function logs it. With
``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client keeps them in per-process files in
that folder, and ``/metrics`` (workflows/metrics.py) adds up every process's files: the
gunicorn workers' and the Celery workers' alike. Gauges that describe the database (queue
depth, oldest PENDING run, runs WAITING) are read at scrape time instead.

``PROMPTPILOT_METRICS_ENABLED=false`` (read at start-up) makes every counter and histogram
here a no-op that registers nothing: ``/metrics`` then serves only the gauges
(bench/load.py measures what recording costs this way).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from prometheus_client import Counter, Histogram, values

# prometheus-client itself reads this variable (to choose how values are stored); read here
# too, as the library does, because it must be settled before the first metric exists.
_FOLDER = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _FOLDER:
    os.makedirs(_FOLDER, exist_ok=True)  # each metric opens its process's file as it is created
    # The files are named by process: with host and pid, containers that share the folder
    # (each with its own pid 1) never write to the same file. prometheus-client reads this
    # class when each metric below is created.
    _HOST = socket.gethostname().replace("_", "-")  # "_" separates the parts of the file name
    values.ValueClass = values.MultiProcessValue(lambda: f"{_HOST}-{os.getpid()}")


class _Off:
    """A counter or histogram that records nothing: the call sites stay as they are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def labels(self, *args: Any, **kwargs: Any) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


if not settings.PROMPTPILOT.get("METRICS_ENABLED", True):
    Counter = Histogram = _Off  # type: ignore[misc, assignment]  # noqa: F811

# Model calls and step runs last from milliseconds (echo, transforms) to minutes (long
# completions): the default buckets stop at 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))

EXECUTIONS_CREATED = Counter(
    "promptpilot_executions_created", "Executions created, by trigger type.", ["trigger_type"])
EXECUTIONS_FINISHED = Counter(
    "promptpilot_executions_finished", "Executions that ended, by final status.", ["status"])
STEP_DURATION = Histogram(
    "promptpilot_step_duration_seconds", "Time a step attempt spent running (template and model calls), by step type.",
    ["step_type"], buckets=DURATION_BUCKETS)
STEP_ATTEMPTS_FINISHED = Counter(
    "promptpilot_step_attempts", "Step attempts checkpointed, by step type and outcome.", ["step_type", "outcome"])
STEP_RETRIES = Counter(
    "promptpilot_step_retries", "Step attempts scheduled again, by reason (the error type, or WorkerLost).",
    ["reason"])
STEP_SLOT_DEFERRALS = Counter(
    "promptpilot_step_slot_deferrals", "Step attempts deferred because their provider's shared rate limit "
    "(ProviderLimit) was full, by provider: a countdown, not a retry.", ["provider"])
PROVIDER_LATENCY = Histogram(
    "promptpilot_provider_latency_seconds", "Latency of model calls made by runs, by provider and model.",
    ["provider", "model"], buckets=DURATION_BUCKETS)
PROVIDER_CALLS = Counter(
    "promptpilot_provider_calls", "Model calls made by runs, by provider, model and status (ok, error).",
    ["provider", "model", "status"])
PROVIDER_TOKENS = Counter(
    "promptpilot_provider_tokens", "Tokens spent by runs' model calls, by provider, model and kind (input, output).",
    ["provider", "model", "kind"])
PROVIDER_COST = Counter(
    "promptpilot_provider_cost_usd", "Cost in USD of runs' model calls with a known price, by provider and model.",
    ["provider", "model"])
TRIGGER_INVOCATIONS = Counter(
    "promptpilot_trigger_invocations",
    "Trigger firings recorded, by trigger type and outcome (ACCEPTED, DUPLICATE, REJECTED, INVALID_INPUT, "
    "SKIPPED); trigger_type=\"WEBHOOK\" counts webhook deliveries.",
    ["trigger_type", "outcome"])
REAPER_RECOVERIES = Counter(
    "promptpilot_reaper_recoveries",
    "What the reaper recovered, by action (expired_leases, workers_lost, steps_resent, executions_resent, "
    "timed_out).", ["action"])


def model_calls_observe(model_outputs: Iterable[dict[str, Any]]) -> None:
    """Count a step attempt's model calls (its ``model_outputs``, costs annotated)."""
    for record in model_outputs:
        provider, model = str(record.get("provider") or ""), str(record.get("model") or "")
        PROVIDER_CALLS.labels(provider, model, record.get("status") or "error").inc()
        PROVIDER_LATENCY.labels(provider, model).observe((record.get("latency_ms") or 0) / 1000)
        tokens = record.get("tokens") or {}
        for kind in ("input", "output"):
            spent = int(tokens.get(kind) or 0)
            if spent > 0:
                PROVIDER_TOKENS.labels(provider, model, kind).inc(spent)
        if record.get("cost_usd"):
            PROVIDER_COST.labels(provider, model).inc(float(record["cost_usd"]))
