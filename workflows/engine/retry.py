"""Step retry policy: whether a failed attempt is tried again, and after how long.

The engine only computes the delay; the orchestrator turns it into a task countdown
(never a sleep in a worker).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .types import FAILED, StepResult

TRANSIENT = "transient"
INVALID_OUTPUT = "invalid_output"
RETRY_ON_CHOICES = (TRANSIENT, INVALID_OUTPUT)
MAX_RETRIES_LIMIT = 20

DEFAULT_RETRY_CONFIG: dict[str, Any] = {
    "max_retries": 0,
    "backoff_base_seconds": 1,
    "backoff_max_seconds": 60,
    "jitter": True,
    "retry_on": [TRANSIENT],
}

# Retrying these cannot help: the same template, input, key or config fails the same way,
# whatever a (buggy) adapter says about ``retryable``.
NEVER_RETRIED = frozenset(
    {
        "TemplateError",
        "InputValidationError",
        "ConfigError",
        "MissingCredentials",
        "InvalidCredentials",
        "BadRequest",
        "UnknownProvider",
        "InternalError",
    }
)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


# One predicate per key, shared by validation (for messages) and normalisation (for fallbacks).
_VALID: dict[str, Callable[[Any], bool]] = {
    "max_retries": lambda v: _is_whole(v) and 0 <= v <= MAX_RETRIES_LIMIT,
    "backoff_base_seconds": _is_seconds,
    "backoff_max_seconds": _is_seconds,
    "jitter": lambda v: isinstance(v, bool),
    "retry_on": lambda v: isinstance(v, list) and all(item in RETRY_ON_CHOICES for item in v),
}
_MESSAGES = {
    "max_retries": f"max_retries must be a whole number from 0 to {MAX_RETRIES_LIMIT}.",
    "backoff_base_seconds": "backoff_base_seconds must be a number of seconds, 0 or more.",
    "backoff_max_seconds": "backoff_max_seconds must be a number of seconds, 0 or more.",
    "jitter": "jitter must be true or false.",
    "retry_on": f'retry_on must be a list of "{TRANSIENT}" and/or "{INVALID_OUTPUT}", e.g. ["{TRANSIENT}"].',
}


def validate_retry_config(cfg: Any) -> list[str]:
    """Human messages for what is wrong with a ``retry_config``; empty when it is valid."""
    if cfg is None:
        return []
    if not isinstance(cfg, dict):
        return ['retry_config must be an object, e.g. {"max_retries": 2}.']
    errors = []
    unknown = sorted(set(cfg) - set(DEFAULT_RETRY_CONFIG))
    if unknown:
        errors.append(f"Unknown key(s) {', '.join(unknown)}; known keys: {', '.join(DEFAULT_RETRY_CONFIG)}.")
    errors.extend(_MESSAGES[key] for key, valid in _VALID.items() if key in cfg and not valid(cfg[key]))
    return errors


def normalize_retry_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The config with defaults filled in. Tolerant: a stored value that does not
    validate falls back to its default rather than crashing a run in flight."""
    merged = {**DEFAULT_RETRY_CONFIG, "retry_on": list(DEFAULT_RETRY_CONFIG["retry_on"])}
    if isinstance(cfg, dict):
        for key, valid in _VALID.items():
            if key in cfg and valid(cfg[key]):
                merged[key] = list(cfg[key]) if key == "retry_on" else cfg[key]
    return merged


def should_retry(retry_on: list[str], result: StepResult) -> bool:
    """Whether ``result``'s error is one ``retry_on`` covers."""
    error_type = (result.error or {}).get("type")
    if error_type in NEVER_RETRIED:
        return False
    if INVALID_OUTPUT in retry_on and error_type == "InvalidOutput":
        return True
    return TRANSIENT in retry_on and result.retryable


def retry_delay(
    cfg: dict[str, Any] | None,
    *,
    retry_count: int,
    result: StepResult,
    max_backoff: float = 300.0,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the step should not retry.

    ``retry_count`` is the number of retries already made. Exponential backoff
    ``min(backoff_max, base * 2**retry_count)``, with full jitter (uniform 0..that) by
    default; a provider's ``Retry-After`` is honoured up to ``backoff_max_seconds``;
    nothing waits longer than ``max_backoff`` (the broker's safe countdown).
    """
    config = normalize_retry_config(cfg)
    if result.status != FAILED or retry_count >= config["max_retries"]:
        return None
    if not should_retry(config["retry_on"], result):
        return None
    ceiling = float(config["backoff_max_seconds"])
    delay = min(ceiling, float(config["backoff_base_seconds"]) * 2 ** min(retry_count, 64))
    if config["jitter"]:
        delay = rng() * delay  # full jitter spreads retries of many runs hitting one rate limit
    if result.retry_after is not None and result.retry_after > 0:
        delay = max(delay, min(float(result.retry_after), ceiling))
    return max(0.0, min(delay, float(max_backoff)))


# --- waiting for a shared rate-limit slot (ProviderLimit) ----------------------------------
# A step whose call found no free slot within RATE_LIMIT_HOLD_SECONDS is *deferred*: its
# attempt ends, and the step is sent again after a countdown, without counting as a retry,
# so hundreds of steps queued behind one provider's budget hold no worker thread. The wait
# in all is bounded (``max_wait``); past it the RateLimited failure meets the retry policy.
SLOT_DEFERRAL_MAX_SECONDS = 10.0


@dataclass(frozen=True)
class SlotDeferral:
    delay: float  # seconds until the step's next try
    waiting_since: datetime
    deferrals: int  # tries deferred so far, this one included

    def error(self, error: dict[str, Any]) -> dict[str, Any]:
        """The step's ``error`` while it waits: the RateLimited failure and how long it has waited."""
        details = {**(error.get("details") or {}), "waiting_since": self.waiting_since.isoformat(),
                   "deferrals": self.deferrals}
        return {**error, "details": details}


def slot_deferral(
    result: StepResult,
    previous_error: dict[str, Any] | None,
    *,
    now: datetime,
    max_wait: float,
    rng: Callable[[], float] = random.random,
) -> SlotDeferral | None:
    """How to defer an attempt that found its provider's shared budget full, or None when
    ``result`` is anything else or the step has already waited ``max_wait`` seconds.

    ``previous_error`` is the step's error before this attempt: a deferred step carries
    its ``waiting_since`` there. The delay grows from the budget's ``retry_after``
    (doubling per deferral, at most 10 s, jittered) so waiters do not knock in step."""
    if not _is_slot_wait(result.error) or result.status != FAILED:
        return None
    waiting_since, deferrals = now, 0
    if _is_slot_wait(previous_error):
        details = previous_error.get("details") or {}
        if details.get("waiting_since"):
            waiting_since = datetime.fromisoformat(details["waiting_since"])
            deferrals = int(details.get("deferrals", 0))
    waited = (now - waiting_since).total_seconds()
    if waited >= max_wait:
        return None
    base = max(float(result.retry_after or 0.0), 0.1)
    delay = min(SLOT_DEFERRAL_MAX_SECONDS, base * 2 ** min(deferrals, 8))
    delay = delay * (0.5 + rng() / 2)
    delay = max(min(delay, max_wait - waited), 0.05)
    return SlotDeferral(delay=delay, waiting_since=waiting_since, deferrals=deferrals + 1)


def _is_slot_wait(error: dict[str, Any] | None) -> bool:
    return bool(error) and error.get("type") == "RateLimited" and (
        (error.get("details") or {}).get("limited_by") == "ProviderLimit")
