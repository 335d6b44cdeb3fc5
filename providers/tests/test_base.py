"""providers/adapters/base.py: Retry-After parsing, status mapping, parameter checks."""
from __future__ import annotations

import pytest

from providers.adapters.base import check_params, error_for_status, parse_retry_after, provider_message
from providers.credentials import OPENAI
from providers.errors import (
    BadRequest,
    InvalidCredentials,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:40 GMT"}, 20.0),  # NOW + 20 s
        ({"Retry-After": "Tue, 14 Nov 2023 22:00:00 GMT"}, 0.0),  # in the past: no wait
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "whenever"}, None),
    ],
)
def test_parse_retry_after(headers, expected) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "code", "error_type", "retryable"),
    [
        (400, None, BadRequest, False),
        (401, None, InvalidCredentials, False),
        (403, None, InvalidCredentials, False),
        (404, None, BadRequest, False),
        (408, None, ProviderTimeout, True),
        (409, None, ProviderUnavailable, True),
        (413, None, BadRequest, False),
        (422, None, BadRequest, False),
        (429, None, RateLimited, True),
        (429, "insufficient_quota", QuotaExceeded, False),
        (500, None, ProviderUnavailable, True),
        (502, None, ProviderUnavailable, True),
        (529, None, ProviderUnavailable, True),
    ],
)
def test_status_mapping(status, code, error_type, retryable) -> None:
    error = error_for_status(OPENAI, status, "msg", headers={"x-request-id": "r"}, code=code)

    assert type(error) is error_type
    assert error.retryable is retryable
    assert error.details["status_code"] == status
    assert error.details["request_id"] == "r"


def test_provider_message_prefers_the_error_body() -> None:
    assert provider_message({"error": {"message": "bad model"}}, "fallback") == "bad model"
    assert provider_message({"message": "flat"}, "fallback") == "flat"
    assert provider_message(None, "fallback") == "fallback"
    assert provider_message("x" * 600, "f").endswith("…")


def test_check_params_keeps_common_ones_and_warns_about_the_rest() -> None:
    params, warnings = check_params(OPENAI, {"temperature": 0, "stop": "X", "seed": 1, "top_p": None})

    assert params == {"temperature": 0, "stop": ["X"]}
    assert len(warnings) == 1 and '"seed"' in warnings[0]
