"""Fixtures for the service tests that run without a broker."""
from __future__ import annotations

import pytest

from workflows.services import dispatch


@pytest.fixture
def broker_messages(monkeypatch, settings):
    """``capture(batch_seconds)``: from then on, what would be sent to the broker is appended
    to the returned list as ``(task name, args)``; ``batch_seconds`` is the start relay's
    ``START_BATCH_SECONDS`` (0: each start's message on its own, at commit)."""

    def capture(batch_seconds: float = 0) -> list[tuple[str, list]]:
        settings.PROMPTPILOT = {**settings.PROMPTPILOT, "START_BATCH_SECONDS": batch_seconds}
        messages: list[tuple[str, list]] = []
        monkeypatch.setattr(dispatch, "_send",
                            lambda name, args, countdown=None: messages.append((name, args)) or True)
        return messages

    return capture
