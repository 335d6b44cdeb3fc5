"""Behaviour every SDK adapter shares, checked against each real SDK and a fake server.

Each test runs three times (``wire`` is parametrised by provider). "Exactly one HTTP
call" is asserted wherever an SDK would retry on its own if we had left it on.
"""
from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from providers.errors import (
    BadRequest,
    InvalidCredentials,
    MissingCredentials,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)

from .fakes import Reply, unused_port_url
from .wires import Wire, call


def test_success_returns_content_usage_and_request_id(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(200, wire.success("Bonjour"), {wire.request_id_header: "req-abc"}))

    response = call(wire)

    assert response.content == "Bonjour"
    used_in, used_out, total = wire.usage
    assert response.tokens == {"input": used_in, "output": used_out, "total": total}
    assert response.request_id == "req-abc"
    assert response.finish_reason
    assert response.retries == 0
    assert response.warnings == []
    assert response.latency_ms >= 0
    [seen] = fake_server.requests
    assert seen.method == "POST"
    assert seen.path == wire.path
    assert "test-key" in seen.headers[wire.key_header]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5)],
    ids=["retry-after-seconds", "retry-after-ms"],
)
def test_429_is_rate_limited_with_retry_after_and_no_sdk_retry(wire: Wire, fake_server, headers, expected) -> None:
    fake_server.queue(Reply(429, wire.error(429, "Slow down"), headers))

    with pytest.raises(RateLimited) as caught:
        call(wire)

    assert caught.value.retryable
    assert caught.value.retry_after == pytest.approx(expected)
    assert caught.value.status_code == 429
    assert "Slow down" in caught.value.message
    assert len(fake_server.requests) == 1


def test_429_retry_after_as_http_date(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(429, wire.error(429, "Slow down"), {"Retry-After": formatdate(time.time() + 30, usegmt=True)}))

    with pytest.raises(RateLimited) as caught:
        call(wire)

    assert 25 <= caught.value.retry_after <= 31
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_provider_unavailable_after_one_call(wire: Wire, fake_server, status) -> None:
    fake_server.queue(Reply(status, wire.error(status, "Boom"), {wire.request_id_header: "req-5xx", "Retry-After": "2"}))

    with pytest.raises(ProviderUnavailable) as caught:
        call(wire)

    error = caught.value
    assert error.retryable
    assert error.retry_after == 2.0  # honoured on 5XX too
    assert error.details["status_code"] == status
    assert error.details["request_id"] == "req-5xx"
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_bad_requests_with_the_providers_message(wire: Wire, fake_server, status) -> None:
    fake_server.queue(Reply(status, wire.error(status, "model 'gpt-x' does not exist"), {wire.request_id_header: "r4"}))

    with pytest.raises(BadRequest) as caught:
        call(wire)

    error = caught.value
    assert not error.retryable
    assert "model 'gpt-x' does not exist" in error.message
    assert f"HTTP {status}" in error.message
    assert error.details["status_code"] == status
    assert error.details["request_id"] == "r4"
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_is_invalid_credentials_naming_the_variable(wire: Wire, fake_server, status) -> None:
    fake_server.queue(Reply(status, wire.error(status, "Incorrect API key provided")))

    with pytest.raises(InvalidCredentials) as caught:
        call(wire)

    error = caught.value
    assert not error.retryable
    assert wire.key_variable in error.message
    assert f"docs/PROVIDERS.md#{wire.provider}" in error.message
    assert "Incorrect API key provided" in error.message
    assert error.details["variable"] == wire.key_variable
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize(("status", "error_type"), [(408, ProviderTimeout), (409, ProviderUnavailable)])
def test_408_and_409_are_retryable_the_same_way_for_every_provider(wire: Wire, fake_server, status, error_type) -> None:
    fake_server.queue(Reply(status, wire.error(status, "Try again"), {"Retry-After": "1"}))

    with pytest.raises(error_type) as caught:
        call(wire)

    assert type(caught.value) is error_type
    assert caught.value.retryable
    assert caught.value.retry_after == 1.0
    assert caught.value.status_code == status
    assert len(fake_server.requests) == 1


def test_a_server_that_never_answers_times_out_on_the_step_timeout(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(hang=True))

    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        call(wire, timeout_seconds=0.5)
    elapsed = time.monotonic() - started

    assert caught.value.retryable
    assert "0.5 s" in caught.value.message
    assert 0.4 <= elapsed < 3.0  # the worker slot is freed, not held until the server gives up
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [("{not json", {}), ("<html>502 Bad Gateway</html>", {"Content-Type": "text/html"})],
    ids=["broken-json", "html-page"],
)
def test_a_body_that_is_not_json_is_provider_unavailable(wire: Wire, fake_server, body, headers) -> None:
    fake_server.queue(Reply(200, body, headers))

    with pytest.raises(ProviderUnavailable) as caught:
        call(wire)

    assert caught.value.retryable
    assert "not valid JSON" in caught.value.message
    assert len(fake_server.requests) == 1


def test_json_that_is_not_an_answer_is_provider_unavailable(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(200, {"unexpected": True}))

    with pytest.raises(ProviderUnavailable) as caught:
        call(wire)

    assert caught.value.retryable
    assert len(fake_server.requests) == 1


def test_missing_key_fails_before_any_http_call(wire: Wire, fake_server, provider_settings) -> None:
    provider_settings(**{wire.base_url_variable: fake_server.url + wire.url_suffix})  # no key

    with pytest.raises(MissingCredentials) as caught:
        call(wire)

    error = caught.value
    assert not error.retryable
    assert wire.key_variable in error.message
    assert f"docs/PROVIDERS.md#{wire.provider}" in error.message
    assert error.details == {
        "provider": wire.provider,
        "variable": wire.key_variable,
        "docs": f"docs/PROVIDERS.md#{wire.provider}",
    }
    assert fake_server.requests == []


def test_blank_key_counts_as_missing(wire: Wire, fake_server, provider_settings) -> None:
    provider_settings(**wire.settings(fake_server, api_key="   "))

    with pytest.raises(MissingCredentials):
        call(wire)
    assert fake_server.requests == []


def test_connection_refused_is_provider_unavailable(wire: Wire, provider_settings) -> None:
    provider_settings(**{wire.key_variable: "test-key", wire.base_url_variable: unused_port_url()})

    with pytest.raises(ProviderUnavailable) as caught:
        call(wire)

    assert caught.value.retryable
    assert "Could not reach" in caught.value.message


def test_unknown_params_warn_and_stay_off_the_wire(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(200, wire.success()))

    response = call(wire, params={"temperature": 0.3, "delay_ms": 100})

    assert any('"delay_ms"' in warning for warning in response.warnings)
    assert "delay_ms" not in fake_server.requests[0].raw_body.decode()


@pytest.mark.parametrize(
    "params",
    [{"temperature": "hot"}, {"max_tokens": 0}, {"max_tokens": True}, {"top_p": -1}, {"stop": [1]}],
    ids=["temperature", "max_tokens-zero", "max_tokens-bool", "top_p", "stop"],
)
def test_badly_typed_params_fail_before_any_http_call(wire: Wire, fake_server, params) -> None:
    with pytest.raises(BadRequest):
        call(wire, params=params)
    assert fake_server.requests == []


def test_the_key_is_read_at_call_time(wire: Wire, fake_server, provider_settings) -> None:
    fake_server.queue(Reply(200, wire.success()), Reply(200, wire.success()))
    call(wire)
    provider_settings(**wire.settings(fake_server, api_key="rotated-key"))

    call(wire)

    first, second = fake_server.requests
    assert "test-key" in first.headers[wire.key_header]
    assert "rotated-key" in second.headers[wire.key_header]
