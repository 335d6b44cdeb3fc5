"""API keys of API triggers: generated here, shown once, stored as prefix + SHA-256.

A key is ``pp_`` + 43 URL-safe characters (32 random bytes), so a plain SHA-256 is
enough (no salt or slow hash needed: there is nothing to brute-force). The prefix is
kept to recognise a key in lists and logs without revealing it.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from ..models import WorkflowTrigger

KEY_PREFIX = "pp_"
PREFIX_LENGTH = 11  # "pp_" + 8 characters
MAX_KEY_LENGTH = 200


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_generate() -> tuple[str, str, str]:
    """A new key: ``(key, prefix, sha256 hex)``. Only the last two are stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:PREFIX_LENGTH], api_key_hash(key)


def api_key_matches(*, trigger: WorkflowTrigger, key: str | None) -> bool:
    """True when ``key`` is this trigger's current key (constant-time comparison)."""
    if not key or not trigger.api_key_hash or len(key) > MAX_KEY_LENGTH:
        return False
    return hmac.compare_digest(api_key_hash(key), trigger.api_key_hash)


RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
                "d": 86400, "day": 86400}
_RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*([a-z]+?)s?\s*$", re.IGNORECASE)


def parse_rate(rate: str) -> tuple[int, int]:
    """``"60/min"`` -> ``(60, 60)``: requests allowed and the window in seconds.
    Raises ValueError naming the accepted forms."""
    match = _RATE.match(rate) if isinstance(rate, str) else None
    period = RATE_PERIODS.get(match.group(2).lower()) if match else None
    if match is None or period is None or int(match.group(1)) < 1:
        raise ValueError(
            f"{rate!r} is not a rate; write N/period with N >= 1 and period s, sec, second, m, min, minute, "
            "h, hour, d or day (e.g. \"60/min\")."
        )
    return int(match.group(1)), period
