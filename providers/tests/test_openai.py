"""providers/adapters/openai.py: the OpenAI wire format, and OpenAI-compatible connections."""
from __future__ import annotations

import pytest

from providers.adapters.openai import OpenAICompatibleAdapter
from providers.errors import InvalidCredentials, QuotaExceeded
from providers.types import ModelRequest

from .fakes import Reply, openai_completion, openai_error
from .wires import WIRES, call

OPENAI = next(wire for wire in WIRES if wire.provider == "openai")


@pytest.fixture
def openai_server(fake_server, provider_settings):
    provider_settings(**OPENAI.settings(fake_server))
    return fake_server


def test_system_prompt_and_params_reach_the_wire_in_openai_format(openai_server) -> None:
    openai_server.queue(Reply(200, openai_completion()))

    call(
        OPENAI,
        prompt="Summarise this",
        system="You are terse.",
        params={"temperature": 0.2, "max_tokens": 50, "top_p": 0.9, "stop": "END"},
    )

    body = openai_server.requests[0].json
    assert body["model"] == "gpt-x"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise this"},
    ]
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.9
    assert body["stop"] == ["END"]
    # OpenAI's current name; its reasoning models reject the old max_tokens.
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body


def test_no_system_message_without_a_system_prompt(openai_server) -> None:
    openai_server.queue(Reply(200, openai_completion()))

    call(OPENAI)

    assert [message["role"] for message in openai_server.requests[0].json["messages"]] == ["user"]


def test_sdk_retries_are_off_and_the_step_timeout_is_sent(openai_server) -> None:
    openai_server.queue(Reply(200, openai_completion()))

    call(OPENAI, timeout_seconds=7.5)

    headers = openai_server.requests[0].headers
    assert headers["x-stainless-retry-count"] == "0"
    assert headers["x-stainless-read-timeout"] == "7.5"


def test_answer_cut_at_max_tokens_warns(openai_server) -> None:
    openai_server.queue(Reply(200, openai_completion("Half an ans", finish_reason="length")))

    response = call(OPENAI)

    assert response.finish_reason == "length"
    assert any("max_tokens" in warning for warning in response.warnings)


def test_insufficient_quota_is_not_retried_like_a_rate_limit(openai_server) -> None:
    body = openai_error("You exceeded your current quota", type="insufficient_quota", code="insufficient_quota")
    openai_server.queue(Reply(429, body))

    with pytest.raises(QuotaExceeded) as caught:
        call(OPENAI)

    assert not caught.value.retryable
    assert "exceeded your current quota" in caught.value.message
    assert len(openai_server.requests) == 1


def test_compatible_connection_uses_its_own_base_url_key_and_max_tokens(fake_server) -> None:
    fake_server.queue(Reply(200, openai_completion("from llama"), {"x-request-id": "ol-1"}))
    adapter = OpenAICompatibleAdapter("local-llama", fake_server.url + "/v1", "sk-local")

    response = adapter.complete(
        ModelRequest(provider="local-llama", model="llama3", prompt="hi", params={"max_tokens": 20}, timeout_seconds=5)
    )

    assert response.content == "from llama"
    assert response.request_id == "ol-1"
    [seen] = fake_server.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-local"
    assert seen.json["max_tokens"] == 20  # what Ollama, vLLM and LM Studio understand
    assert "max_completion_tokens" not in seen.json


def test_compatible_connection_without_a_key_still_calls_the_server(fake_server, provider_settings) -> None:
    provider_settings()  # no OPENAI_API_KEY: irrelevant to a connection
    fake_server.queue(Reply(200, openai_completion()))
    adapter = OpenAICompatibleAdapter("ollama", fake_server.url + "/v1", None)

    adapter.complete(ModelRequest(provider="ollama", model="llama3", prompt="hi", timeout_seconds=5))

    assert len(fake_server.requests) == 1


def test_compatible_connection_rejected_key_names_the_connection(fake_server) -> None:
    fake_server.queue(Reply(401, openai_error("bad key")))
    adapter = OpenAICompatibleAdapter("openrouter", fake_server.url + "/v1", "sk-wrong")

    with pytest.raises(InvalidCredentials) as caught:
        adapter.complete(ModelRequest(provider="openrouter", model="m", prompt="hi", timeout_seconds=5))

    assert 'connection "openrouter"' in caught.value.message
    assert "docs/PROVIDERS.md#openai-compatible" in caught.value.message


def test_compatible_connection_needs_a_base_url() -> None:
    with pytest.raises(ValueError, match="base URL"):
        OpenAICompatibleAdapter("broken", "  ", "k")
