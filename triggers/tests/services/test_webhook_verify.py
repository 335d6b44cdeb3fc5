"""Standard Webhooks verification (``triggers/services/webhooks.py``): a pure function, no database."""
from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from triggers.services.webhooks import (
    WebhookVerificationError,
    webhook_secret_generate,
    webhook_signature,
    webhook_verify,
)

# The test vector published with the Standard Webhooks specification.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
NOW = 1_700_000_000


def headers(msg_id: str, timestamp, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def signed(secret: str, body: bytes, *, msg_id: str = "msg_1", timestamp: int = NOW) -> dict[str, str]:
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode())
    return headers(msg_id, timestamp, sig)


@pytest.fixture
def secret() -> str:
    return webhook_secret_generate()


def test_published_test_vector_verifies_with_frozen_now():
    msg_id = webhook_verify(
        secret=VECTOR_SECRET, headers=headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE), body=VECTOR_BODY,
        now=VECTOR_TIMESTAMP,
    )
    assert msg_id == VECTOR_ID
    assert webhook_signature(secret=VECTOR_SECRET, msg_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP,
                             body=VECTOR_BODY) == VECTOR_SIGNATURE


def test_published_test_vector_is_stale_against_the_real_clock():
    with pytest.raises(WebhookVerificationError, match="old"):
        webhook_verify(secret=VECTOR_SECRET, headers=headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE),
                       body=VECTOR_BODY)


def test_delivery_signed_by_the_standardwebhooks_library_verifies(secret):
    body = b'{"customer": "Ada", "amount": 12.5}'
    assert webhook_verify(secret=secret, headers=signed(secret, body, msg_id="msg_abc"), body=body, now=NOW) == "msg_abc"


def test_the_library_accepts_what_we_sign(secret):
    body = b'{"x": 1}'
    # The library checks against the real clock, so sign for now.
    now = int(datetime.now(tz=UTC).timestamp())
    sig = webhook_signature(secret=secret, msg_id="msg_2", timestamp=now, body=body)
    assert Webhook(secret).verify(body, headers("msg_2", now, sig)) == {"x": 1}


def test_generated_secret_is_whsec_base64_of_32_bytes(secret):
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_"):])) == 32
    assert webhook_secret_generate() != secret


def test_re_serialised_body_is_rejected(secret):
    body = b'{"customer":"Ada",  "amount": 12.50}'
    reserialised = json.dumps(json.loads(body)).encode()
    assert reserialised != body
    with pytest.raises(WebhookVerificationError, match="No signature"):
        webhook_verify(secret=secret, headers=signed(secret, body), body=reserialised, now=NOW)


def test_tampered_body_is_rejected(secret):
    with pytest.raises(WebhookVerificationError):
        webhook_verify(secret=secret, headers=signed(secret, b'{"amount": 1}'), body=b'{"amount": 9}', now=NOW)


def test_wrong_secret_is_rejected(secret):
    body = b"{}"
    with pytest.raises(WebhookVerificationError):
        webhook_verify(secret=webhook_secret_generate(), headers=signed(secret, body), body=body, now=NOW)


def test_several_signatures_are_accepted_when_one_matches(secret):
    body = b'{"a": 1}'
    good = signed(secret, body)["webhook-signature"]
    other = signed(webhook_secret_generate(), body)["webhook-signature"]
    header = f"v2,ignored {other} v1,!!notbase64 {good}"
    assert webhook_verify(secret=secret, headers={**signed(secret, body), "webhook-signature": header},
                          body=body, now=NOW) == "msg_1"


def test_several_signatures_none_matching_is_rejected(secret):
    body = b'{"a": 1}'
    bad = " ".join(signed(webhook_secret_generate(), body)["webhook-signature"] for _ in range(3))
    with pytest.raises(WebhookVerificationError):
        webhook_verify(secret=secret, headers={**signed(secret, body), "webhook-signature": bad}, body=body, now=NOW)


@pytest.mark.parametrize("offset", [-300, 300, 0])
def test_timestamp_within_five_minutes_either_way_is_accepted(secret, offset):
    body = b"{}"
    webhook_verify(secret=secret, headers=signed(secret, body, timestamp=NOW + offset), body=body, now=NOW)


@pytest.mark.parametrize(("offset", "word"), [(-301, "old"), (301, "future")])
def test_timestamp_301_seconds_off_either_way_is_rejected(secret, offset, word):
    body = b"{}"
    with pytest.raises(WebhookVerificationError, match=word):
        webhook_verify(secret=secret, headers=signed(secret, body, timestamp=NOW + offset), body=body, now=NOW)


@pytest.mark.parametrize("timestamp", [f"{NOW}.0", "1.7e9", "abc", f"-{NOW}", f" {NOW}x", "", "١٢٣"])
def test_non_integer_timestamp_is_rejected(secret, timestamp):
    body = b"{}"
    sig = webhook_signature(secret=secret, msg_id="msg_1", timestamp=timestamp, body=body)
    with pytest.raises(WebhookVerificationError):
        webhook_verify(secret=secret, headers=headers("msg_1", timestamp, sig), body=body, now=NOW)


def test_webhook_id_containing_a_dot_is_rejected(secret):
    body = b"{}"
    with pytest.raises(WebhookVerificationError, match="'.'"):
        webhook_verify(secret=secret, headers=signed(secret, body, msg_id="msg.1"), body=body, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected_and_named(secret, missing):
    body = b"{}"
    sent = signed(secret, body)
    del sent[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        webhook_verify(secret=secret, headers=sent, body=body, now=NOW)


def test_header_names_are_case_insensitive(secret):
    body = b"{}"
    sent = {k.title(): v for k, v in signed(secret, body).items()}
    assert webhook_verify(secret=secret, headers=sent, body=body, now=NOW) == "msg_1"


def test_signature_is_over_the_raw_bytes_not_decoded_text(secret):
    body = '{"name": "Zoë"}'.encode()
    assert webhook_verify(secret=secret, headers=signed(secret, body), body=body, now=NOW)
    with pytest.raises(WebhookVerificationError):
        webhook_verify(secret=secret, headers=signed(secret, body), body=b'{"name": "Zoe"}', now=NOW)


def test_any_of_several_secrets_verifies(secret):
    body = b"{}"
    previous = webhook_secret_generate()
    assert webhook_verify(secret=[secret, previous], headers=signed(previous, body), body=body, now=NOW) == "msg_1"
    with pytest.raises(WebhookVerificationError):
        webhook_verify(secret=[secret], headers=signed(previous, body), body=body, now=NOW)


@pytest.mark.parametrize("msg_id", ["msg\x00x", "msg\nx", "msg\tx"])
def test_webhook_id_with_control_characters_is_rejected(secret, msg_id):
    body = b"{}"
    with pytest.raises(WebhookVerificationError, match="printable"):
        webhook_verify(secret=secret, headers=signed(secret, body, msg_id=msg_id), body=body, now=NOW)
