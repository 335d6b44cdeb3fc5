"""Encryption at rest for trigger secrets (webhook signing secrets).

A thin layer over ``promptpilot.common.crypto`` (Fernet, keys from
``PROMPTPILOT_SECRETS_KEY`` else ``DJANGO_SECRET_KEY``, HKDF per purpose, rotation by
prepending a key) that speaks this app's error vocabulary.
"""
from __future__ import annotations

from functools import lru_cache

from promptpilot.common import crypto

from ..errors import SecretUnreadable

PURPOSE = "triggers.secrets"  # HKDF info "promptpilot.triggers.secrets.v1": unchanged tokens stay readable


def secret_encrypt(plaintext: str) -> str:
    """The Fernet token (ASCII) of ``plaintext`` under the first configured key."""
    return crypto.encrypt(plaintext, purpose=PURPOSE)


def secret_decrypt(token: str) -> str:
    """The plaintext of a token made by ``secret_encrypt``. Raises SecretUnreadable."""
    if not token:
        raise SecretUnreadable("No secret is stored.")
    try:
        return _decrypt(token, crypto.configured_keys())
    except crypto.DecryptionError as exc:
        raise SecretUnreadable(
            "The stored secret cannot be decrypted with the configured PROMPTPILOT_SECRETS_KEY; "
            "rotate the trigger's secret."
        ) from exc


@lru_cache(maxsize=1024)
def _decrypt(token: str, keys: tuple[str, ...]) -> str:
    # Every webhook delivery needs its trigger's secret: Fernet's check and AES cost more
    # than the rest of the signature verification. A token (and the configured keys) only
    # ever decrypts to one plaintext, so each process remembers it.
    return crypto.decrypt(token, purpose=PURPOSE)
