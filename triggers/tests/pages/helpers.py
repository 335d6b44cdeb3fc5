"""Small helpers for the page tests."""
from __future__ import annotations

import re


def text(response) -> str:
    return response.content.decode()


def flashes(response) -> list[str]:
    """The messages shown on a rendered page (after following redirects)."""
    return [str(message) for message in response.context["messages"]]


def one_time_secret(response) -> str | None:
    match = re.search(r'data-testid="secret-value">([^<]+)<', text(response))
    return match.group(1) if match else None
