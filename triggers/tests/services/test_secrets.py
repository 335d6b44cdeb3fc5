"""Encryption at rest of webhook secrets (``triggers/services/secrets.py``)."""
from __future__ import annotations

import pytest

from triggers.errors import SecretUnreadable
from triggers.services.secrets import secret_decrypt, secret_encrypt


def test_round_trip_and_the_token_does_not_contain_the_secret():
    token = secret_encrypt("whsec_c2VjcmV0")
    assert "c2VjcmV0" not in token
    assert secret_decrypt(token) == "whsec_c2VjcmV0"
    assert secret_encrypt("whsec_c2VjcmV0") != token  # random IV: equal secrets do not look equal


def test_default_key_is_derived_from_secret_key(settings):
    settings.PROMPTPILOT_SECRETS_KEYS = [settings.SECRET_KEY]
    token = secret_encrypt("s")
    settings.PROMPTPILOT_SECRETS_KEYS = ["another key"]
    with pytest.raises(SecretUnreadable, match="PROMPTPILOT_SECRETS_KEY"):
        secret_decrypt(token)


def test_keys_rotate_by_prepending_the_new_one(settings):
    settings.PROMPTPILOT_SECRETS_KEYS = ["old key"]
    old_token = secret_encrypt("s1")
    settings.PROMPTPILOT_SECRETS_KEYS = ["new key", "old key"]
    new_token = secret_encrypt("s2")
    assert secret_decrypt(old_token) == "s1" and secret_decrypt(new_token) == "s2"
    settings.PROMPTPILOT_SECRETS_KEYS = ["new key"]
    assert secret_decrypt(new_token) == "s2"
    with pytest.raises(SecretUnreadable):
        secret_decrypt(old_token)


@pytest.mark.parametrize("token", ["", "not a token", "gAAAAA"])
def test_garbage_is_unreadable(token):
    with pytest.raises(SecretUnreadable):
        secret_decrypt(token)
