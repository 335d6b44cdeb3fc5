"""Ids from URLs and query strings, parsed leniently: anything malformed is None, so the
selectors can answer it exactly like a missing object."""
from __future__ import annotations

import uuid
from typing import Any

MAX_DB_INT = 2**63 - 1


def parse_int_id(value: Any) -> int | None:
    """A positive integer id, or None for anything else ("abc", "1.5", huge numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit() or len(text) > 19:  # 19 digits: past any database id
            return None
        number = int(text)
    return number if 0 < number <= MAX_DB_INT else None


def parse_uuid(value: Any) -> uuid.UUID | None:
    """A UUID id, or None for anything that is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None
