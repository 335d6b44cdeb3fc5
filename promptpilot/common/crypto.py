"""Encryption at rest for secrets the application must read back (connection API keys, ...).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``. Each configured key string
(``settings.PROMPTPILOT_SECRETS_KEYS``: ``PROMPTPILOT_SECRETS_KEY``, comma separated,
else ``DJANGO_SECRET_KEY``) is stretched with HKDF-SHA256 into one Fernet key per
*purpose*, so a token made for one purpose never decrypts as another. The first key
encrypts; every key decrypts: rotate by prepending the new key, then run
``manage.py reencrypt_secrets`` (``promptpilot/common/secrets_at_rest.py``).

Hashes are for secrets the application only compares (API keys of triggers): store
those as hashes, not here.
"""
from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class DecryptionError(Exception):
    """The token was made with a key that is no longer configured, or is corrupted."""


def _derive(key: str, purpose: str) -> Fernet:
    # info = "promptpilot.<purpose>.v1": the same derivation triggers/services/secrets.py
    # uses for purpose "triggers.secrets", so it can move here without re-encrypting.
    info = f"promptpilot.{purpose}.v1".encode()
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key.encode())
    return Fernet(base64.urlsafe_b64encode(raw))


@lru_cache(maxsize=64)  # (key set, purpose) pairs: each key alone too (key_index)
def _fernet(keys: tuple[str, ...], purpose: str) -> MultiFernet:
    if not keys or not all(keys):
        raise RuntimeError("No encryption key: set PROMPTPILOT_SECRETS_KEY or DJANGO_SECRET_KEY.")
    return MultiFernet([_derive(key, purpose) for key in keys])


def configured_keys() -> tuple[str, ...]:
    from django.conf import settings

    return tuple(getattr(settings, "PROMPTPILOT_SECRETS_KEYS", None) or [settings.SECRET_KEY])


def encrypt(plaintext: str, *, purpose: str) -> str:
    """The Fernet token (ASCII) of ``plaintext`` under the first configured key."""
    return _fernet(configured_keys(), purpose).encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str, *, purpose: str) -> str:
    """The plaintext of a token ``encrypt`` made for the same ``purpose``.

    Raises ``DecryptionError`` when no configured key opens it.
    """
    try:
        return _fernet(configured_keys(), purpose).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError) as exc:
        raise DecryptionError(
            "The stored secret cannot be decrypted with the configured keys (PROMPTPILOT_SECRETS_KEY, "
            "else DJANGO_SECRET_KEY): was the key changed? Enter the secret again."
        ) from exc


def key_index(token: str, *, purpose: str) -> int:
    """Which configured key opens ``token``: 0 is the key ``encrypt`` uses now.

    Raises ``DecryptionError`` when none does.
    """
    for index, key in enumerate(configured_keys()):
        try:
            _fernet((key,), purpose).decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError, ValueError):
            continue
        return index
    raise DecryptionError("No configured key opens the stored secret.")


def reencrypt(token: str, *, purpose: str) -> str:
    """``token``'s plaintext encrypted again under the first configured key (Fernet's
    rotate: any configured key may open it). Raises ``DecryptionError`` when none does."""
    try:
        return _fernet(configured_keys(), purpose).rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError, ValueError) as exc:
        raise DecryptionError("No configured key opens the stored secret.") from exc
