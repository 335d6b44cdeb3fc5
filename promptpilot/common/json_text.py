"""Text that JSON can carry but UTF-8 and PostgreSQL cannot: lone UTF-16 surrogates.

``"\\ud800"`` is valid JSON syntax, and Python's ``json`` decodes it to a string that
cannot be encoded as UTF-8: storing it (psycopg) or sending it back (DRF's renderer)
raises ``UnicodeEncodeError``. Every JSON body the API parses is checked here first.
"""
from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in any string (key or value) of ``value``, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _LONE_SURROGATE.search(item)
            if found:
                return found.group()
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


def lone_surrogate_message(char: str) -> str:
    return (
        f"The JSON holds a lone UTF-16 surrogate (\\u{ord(char):04x}), which is not valid text. "
        "Send the character itself, or both halves of a surrogate pair (such as \\ud83d\\ude00)."
    )


def without_lone_surrogates(value: Any) -> Any:
    """A copy of ``value`` with every lone surrogate replaced by U+FFFD (for records kept as evidence)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_lone_surrogates(item) for item in value]
    return value


class TextSafeJSONParser(JSONParser):
    """DRF's JSON parser, refusing lone surrogates with a 400 that says what to change."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        char = lone_surrogate(data)
        if char is not None:
            raise ParseError(lone_surrogate_message(char))
        return data
