"""Helpers for multi-model tests: one fake server for all three SDKs, answering each
model from its own script whatever order the concurrent calls arrive in."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .fakes import FakeServer, Recorded, Reply
from .wires import WIRES, Wire

OPENAI, ANTHROPIC, GEMINI = WIRES

THREE = [
    {"provider": "openai", "model": "gpt-a", "temperature": 0.1},
    {"provider": "anthropic", "model": "claude-b"},
    {"provider": "gemini", "model": "gemini-c"},
]


def point_all_providers_at(server: FakeServer, provider_settings: Callable[..., None]) -> FakeServer:
    """openai, anthropic and gemini, all configured against ``server``."""
    values: dict[str, str] = {}
    for wire in WIRES:
        values.update(wire.settings(server))
    provider_settings(**values)
    return server


def model_of(request: Recorded) -> str:
    """The model a request asked for: in the path for Gemini, in the JSON body otherwise."""
    if ":generateContent" in request.path:
        return request.path.split("/models/", 1)[1].split(":", 1)[0]
    return request.json["model"]


def script(server: FakeServer, replies: dict[str, list[Reply]]) -> None:
    """Answer each model from its own list of replies."""
    queues = {model: list(items) for model, items in replies.items()}

    def answer(request: Recorded) -> Reply:
        queue = queues.get(model_of(request))
        if not queue:
            return Reply(500, {"error": {"message": f"nothing scripted for {model_of(request)}"}})
        return queue.pop(0)

    server.default = answer


def calls_to(server: FakeServer, model: str) -> list[Recorded]:
    return [request for request in server.requests if model_of(request) == model]


def ok(wire: Wire, content: str, *, delay: float = 0.0, request_id: str | None = None) -> Reply:
    headers = {wire.request_id_header: request_id} if request_id else {}
    return Reply(200, wire.success(content), headers, delay=delay)


def fail(wire: Wire, status: int, message: str = "nope", *, delay: float = 0.0, **headers: Any) -> Reply:
    return Reply(status, wire.error(status, message), dict(headers), delay=delay)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` (the server notices a closed connection within ~50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
