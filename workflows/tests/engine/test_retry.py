"""workflows/engine/retry.py: which failures retry, and how long the engine waits."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workflows.engine.retry import (
    DEFAULT_RETRY_CONFIG,
    normalize_retry_config,
    retry_delay,
    slot_deferral,
    validate_retry_config,
)
from workflows.engine.types import COMPLETED, FAILED, StepResult


def failure(error_type: str = "RateLimited", *, retryable: bool = True, retry_after: float | None = None) -> StepResult:
    return StepResult(
        status=FAILED,
        error={"type": error_type, "message": "boom", "step": "s", "details": {}},
        retryable=retryable,
        retry_after=retry_after,
    )


def delay(cfg: dict[str, Any], retry_count: int = 0, result: StepResult | None = None, **kwargs: Any) -> float | None:
    return retry_delay(cfg, retry_count=retry_count, result=result or failure(), **kwargs)


NO_JITTER = {"max_retries": 5, "jitter": False}


def test_normalize_fills_the_documented_defaults() -> None:
    assert normalize_retry_config(None) == DEFAULT_RETRY_CONFIG
    assert normalize_retry_config({"max_retries": 2})["max_retries"] == 2


def test_normalize_ignores_bad_stored_values_instead_of_crashing_a_run() -> None:
    normalized = normalize_retry_config({"max_retries": "3", "retry_on": ["sometimes"], "jitter": "yes"})
    assert normalized == DEFAULT_RETRY_CONFIG


def test_a_valid_config_has_no_errors() -> None:
    assert validate_retry_config({"max_retries": 3, "backoff_base_seconds": 0.5, "retry_on": ["transient", "invalid_output"]}) == []
    assert validate_retry_config(None) == []


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [({"retries": 3}, "Unknown key(s) retries"), ({"max_retries": -1}, "max_retries"),
     ({"backoff_base_seconds": -2}, "backoff_base_seconds"), ({"retry_on": ["always"]}, "retry_on"),
     ({"jitter": 1}, "jitter"), ([1], "must be an object")],
)
def test_invalid_configs_say_what_to_change(cfg: Any, fragment: str) -> None:
    assert any(fragment in message for message in validate_retry_config(cfg))


def test_no_retry_by_default() -> None:
    assert delay({}) is None


def test_backoff_doubles_per_retry_up_to_the_maximum() -> None:
    cfg = {**NO_JITTER, "backoff_base_seconds": 1, "backoff_max_seconds": 5}
    assert [delay(cfg, n) for n in range(4)] == [1, 2, 4, 5]


def test_retries_stop_when_exhausted() -> None:
    assert delay({"max_retries": 2, "jitter": False}, retry_count=2) is None


def test_full_jitter_picks_uniformly_below_the_backoff() -> None:
    cfg = {"max_retries": 3, "backoff_base_seconds": 4}
    assert delay(cfg, 1, rng=lambda: 0.25) == 2.0  # 0.25 * 4 * 2**1


def test_retry_after_is_honoured_but_capped_by_backoff_max() -> None:
    assert delay(NO_JITTER, result=failure(retry_after=30)) == 30
    assert delay({**NO_JITTER, "backoff_max_seconds": 10}, result=failure(retry_after=30)) == 10


def test_no_delay_exceeds_the_broker_safe_maximum() -> None:
    cfg = {**NO_JITTER, "backoff_base_seconds": 1000, "backoff_max_seconds": 1000}
    assert delay(cfg, max_backoff=120) == 120


@pytest.mark.parametrize("error_type", ["TemplateError", "InputValidationError", "MissingCredentials", "ConfigError"])
def test_template_validation_credential_and_config_errors_never_retry(error_type: str) -> None:
    assert delay(NO_JITTER, result=failure(error_type, retryable=True)) is None


def test_non_retryable_provider_errors_do_not_retry_as_transient() -> None:
    assert delay(NO_JITTER, result=failure("BadRequest", retryable=False)) is None


def test_invalid_output_retries_only_when_asked() -> None:
    invalid = failure("InvalidOutput", retryable=False)
    assert delay(NO_JITTER, result=invalid) is None
    assert delay({**NO_JITTER, "retry_on": ["invalid_output"]}, result=invalid) == 1


def test_transient_errors_are_not_retried_when_only_invalid_output_is_listed() -> None:
    assert delay({**NO_JITTER, "retry_on": ["invalid_output"]}) is None


def test_completed_results_never_retry() -> None:
    assert delay(NO_JITTER, result=StepResult(status=COMPLETED)) is None


# --- deferral while a shared rate-limit slot is busy (ProviderLimit) ---------------------

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def slot_busy(retry_after: float = 1.0) -> StepResult:
    return StepResult(status=FAILED, retryable=True, retry_after=retry_after, error={
        "type": "RateLimited", "message": "no free slot",
        "details": {"provider": "openai", "limited_by": "ProviderLimit"}})


def test_a_full_shared_budget_defers_the_attempt_and_starts_the_wait_clock() -> None:
    deferral = slot_deferral(slot_busy(), None, now=NOW, max_wait=30, rng=lambda: 1.0)
    assert deferral is not None
    assert (deferral.waiting_since, deferral.deferrals, deferral.delay) == (NOW, 1, 1.0)
    error = deferral.error(slot_busy().error)
    assert error["details"] == {"provider": "openai", "limited_by": "ProviderLimit",
                                "waiting_since": NOW.isoformat(), "deferrals": 1}


def test_later_deferrals_keep_the_wait_clock_and_back_off_up_to_ten_seconds() -> None:
    first = slot_deferral(slot_busy(), None, now=NOW, max_wait=300, rng=lambda: 1.0)
    previous = first.error(slot_busy().error)
    delays = []
    for n in range(1, 8):
        later = slot_deferral(slot_busy(), previous, now=NOW + timedelta(seconds=n), max_wait=300, rng=lambda: 1.0)
        assert later.waiting_since == NOW and later.deferrals == n + 1
        delays.append(later.delay)
        previous = later.error(slot_busy().error)
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]


def test_the_wait_in_all_is_bounded_then_the_retry_policy_decides() -> None:
    waited = slot_deferral(slot_busy(), None, now=NOW, max_wait=30).error(slot_busy().error)
    assert slot_deferral(slot_busy(), waited, now=NOW + timedelta(seconds=31), max_wait=30) is None
    # The last deferral never overshoots the budget.
    last = slot_deferral(slot_busy(retry_after=20), waited, now=NOW + timedelta(seconds=25), max_wait=30, rng=lambda: 1.0)
    assert last.delay == pytest.approx(5.0)


def test_only_the_shared_budget_defers_not_a_providers_own_429_or_other_failures() -> None:
    providers_429 = StepResult(status=FAILED, retryable=True, retry_after=3, error={
        "type": "RateLimited", "message": "Rate limit reached", "details": {"status_code": 429}})
    assert slot_deferral(providers_429, None, now=NOW, max_wait=30) is None
    assert slot_deferral(failure("ProviderTimeout"), None, now=NOW, max_wait=30) is None
    assert slot_deferral(StepResult(status=COMPLETED, output="ok"), None, now=NOW, max_wait=30) is None
