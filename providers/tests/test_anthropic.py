"""providers/adapters/anthropic.py: the Anthropic Messages wire format."""
from __future__ import annotations

import pytest

from providers.errors import ProviderUnavailable

from .fakes import Reply, anthropic_error, anthropic_message
from .wires import WIRES, call

ANTHROPIC = next(wire for wire in WIRES if wire.provider == "anthropic")


@pytest.fixture
def anthropic_server(fake_server, provider_settings):
    provider_settings(**ANTHROPIC.settings(fake_server))
    return fake_server


def test_system_prompt_and_params_reach_the_wire_in_anthropic_format(anthropic_server) -> None:
    anthropic_server.queue(Reply(200, anthropic_message()))

    call(ANTHROPIC, prompt="Summarise this", system="You are terse.", params={"max_tokens": 50, "stop": ["END", "STOP"]})

    body = anthropic_server.requests[0].json
    assert body["model"] == "claude-x"
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": "Summarise this"}]
    assert body["max_tokens"] == 50
    assert body["stop_sequences"] == ["END", "STOP"]


def test_max_tokens_defaults_to_1024_because_anthropic_requires_it(anthropic_server) -> None:
    anthropic_server.queue(Reply(200, anthropic_message()))

    call(ANTHROPIC)

    body = anthropic_server.requests[0].json
    assert body["max_tokens"] == 1024
    assert "system" not in body


def test_sampling_params_are_dropped_with_a_warning(anthropic_server) -> None:
    # API version 2026-10-21 answers 400 to temperature/top_p, whatever their value.
    anthropic_server.queue(Reply(200, anthropic_message()))

    response = call(ANTHROPIC, params={"temperature": 0.2, "top_p": 0.9})

    body = anthropic_server.requests[0].json
    assert "temperature" not in body and "top_p" not in body
    assert sum('"temperature"' in w or '"top_p"' in w for w in response.warnings) == 2


def test_529_overloaded_is_provider_unavailable_after_one_call(anthropic_server) -> None:
    anthropic_server.queue(
        Reply(529, anthropic_error("Overloaded", type="overloaded_error"), {"request-id": "req-529", "retry-after": "4"})
    )

    with pytest.raises(ProviderUnavailable) as caught:
        call(ANTHROPIC)

    error = caught.value
    assert error.retryable
    assert error.retry_after == 4.0
    assert error.details["status_code"] == 529
    assert error.details["request_id"] == "req-529"
    assert "Overloaded" in error.message
    assert len(anthropic_server.requests) == 1


def test_cached_prompt_tokens_count_as_input(anthropic_server) -> None:
    body = anthropic_message()
    body["usage"].update(cache_creation_input_tokens=100, cache_read_input_tokens=50)
    anthropic_server.queue(Reply(200, body))

    response = call(ANTHROPIC)

    assert response.tokens == {"input": 162, "output": 5, "total": 167}


def test_answer_cut_at_max_tokens_warns(anthropic_server) -> None:
    anthropic_server.queue(Reply(200, anthropic_message("Half", stop_reason="max_tokens")))

    response = call(ANTHROPIC)

    assert response.finish_reason == "max_tokens"
    assert any("max_tokens" in warning for warning in response.warnings)


def test_sdk_retries_are_off(anthropic_server) -> None:
    anthropic_server.queue(Reply(200, anthropic_message()))

    call(ANTHROPIC, timeout_seconds=9.5)

    headers = anthropic_server.requests[0].headers
    assert headers["x-stainless-retry-count"] == "0"
    assert headers["x-stainless-read-timeout"] == "9.5"
