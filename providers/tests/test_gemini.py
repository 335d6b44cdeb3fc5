"""providers/adapters/gemini.py: the Gemini generateContent wire format."""
from __future__ import annotations

import pytest

from providers.adapters.gemini import timeout_ms
from providers.errors import BadRequest, InvalidCredentials, RateLimited

from .fakes import Reply, gemini_error, gemini_response
from .wires import WIRES, call

GEMINI = next(wire for wire in WIRES if wire.provider == "gemini")


@pytest.fixture
def gemini_server(fake_server, provider_settings):
    provider_settings(**GEMINI.settings(fake_server))
    return fake_server


def test_system_prompt_and_params_reach_the_wire_in_gemini_format(gemini_server) -> None:
    gemini_server.queue(Reply(200, gemini_response()))

    call(
        GEMINI,
        prompt="Summarise this",
        system="You are terse.",
        params={"temperature": 0.2, "max_tokens": 50, "top_p": 0.9, "stop": "END"},
    )

    seen = gemini_server.requests[0]
    assert seen.path == "/v1beta/models/gemini-x:generateContent"
    assert seen.headers["x-goog-api-key"] == "test-key"
    body = seen.json
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Summarise this"}]}]
    assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    assert body["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"]}


def test_no_system_instruction_or_config_when_unset(gemini_server) -> None:
    gemini_server.queue(Reply(200, gemini_response()))

    call(GEMINI)

    body = gemini_server.requests[0].json
    assert "systemInstruction" not in body
    assert not body.get("generationConfig")


def test_the_step_timeout_is_converted_to_milliseconds() -> None:
    assert timeout_ms(120) == 120_000
    assert timeout_ms(0.5) == 500
    assert timeout_ms(0.0001) == 1  # 0 would mean "no timeout" to google-genai


def test_the_step_timeout_reaches_the_sdk_per_call(gemini_server) -> None:
    gemini_server.queue(Reply(200, gemini_response()))

    call(GEMINI, timeout_seconds=7.5)

    # google-genai tells the server the deadline it enforces: 7500 ms, rounded up to seconds.
    assert gemini_server.requests[0].headers["x-server-timeout"] == "8"


def test_request_id_falls_back_to_the_response_id(gemini_server) -> None:
    gemini_server.queue(Reply(200, gemini_response(response_id="resp-42")))

    assert call(GEMINI).request_id == "resp-42"


def test_thought_parts_are_not_the_answer_but_their_tokens_are_output(gemini_server) -> None:
    body = gemini_response()
    body["candidates"][0]["content"]["parts"] = [{"text": "Let me think...", "thought": True}, {"text": "42"}]
    body["usageMetadata"] = {"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 30,
                             "totalTokenCount": 42}
    gemini_server.queue(Reply(200, body))

    response = call(GEMINI)

    assert response.content == "42"
    assert response.tokens == {"input": 10, "output": 32, "total": 42}


def test_429_wait_from_the_body_retry_info(gemini_server) -> None:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"}
    gemini_server.queue(Reply(429, gemini_error(429, "Quota exceeded", "RESOURCE_EXHAUSTED", details=[retry_info])))

    with pytest.raises(RateLimited) as caught:
        call(GEMINI)

    assert caught.value.retry_after == 27.0
    assert len(gemini_server.requests) == 1


def test_invalid_key_sent_as_400_is_invalid_credentials(gemini_server) -> None:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    body = gemini_error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT", details=[info])
    gemini_server.queue(Reply(400, body))

    with pytest.raises(InvalidCredentials) as caught:
        call(GEMINI)

    assert "GEMINI_API_KEY" in caught.value.message
    assert "docs/PROVIDERS.md#gemini" in caught.value.message
    assert not caught.value.retryable


def test_blocked_prompt_is_a_bad_request(gemini_server) -> None:
    gemini_server.queue(Reply(200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}))

    with pytest.raises(BadRequest) as caught:
        call(GEMINI)

    assert "SAFETY" in caught.value.message
    assert not caught.value.retryable


def test_answer_cut_at_max_tokens_warns(gemini_server) -> None:
    gemini_server.queue(Reply(200, gemini_response("Half", finish_reason="MAX_TOKENS")))

    response = call(GEMINI)

    assert response.finish_reason == "MAX_TOKENS"
    assert any("max_tokens" in warning for warning in response.warnings)
