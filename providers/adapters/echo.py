"""The built-in offline provider: answers with the prompt, unchanged.

Deterministic, so tests and demos can assert exact outputs; ``delay_ms`` makes it slow
for demos of long steps; tokens are word counts.
"""
from __future__ import annotations

import asyncio
import time

from ..errors import BadRequest, ProviderTimeout
from ..registry import register
from ..types import ModelRequest, ModelResponse, TokenUsage


class EchoAdapter:
    name = "echo"

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.monotonic()
        delay = self._delay_seconds(request)
        if delay > request.timeout_seconds:
            time.sleep(request.timeout_seconds)
            raise self._timeout(request)
        if delay:
            time.sleep(delay)
        return self._answer(request, started)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """``complete`` on an event loop: the delay is an ``asyncio.sleep``, so a race
        cancels a slow echo as it would abort an HTTP call."""
        started = time.monotonic()
        delay = self._delay_seconds(request)
        if delay > request.timeout_seconds:
            await asyncio.sleep(request.timeout_seconds)
            raise self._timeout(request)
        if delay:
            await asyncio.sleep(delay)
        return self._answer(request, started)

    def _delay_seconds(self, request: ModelRequest) -> float:
        delay_ms = request.params.get("delay_ms", 0) or 0
        if not isinstance(delay_ms, (int, float)) or isinstance(delay_ms, bool) or delay_ms < 0:
            raise BadRequest("echo: delay_ms must be a non-negative number of milliseconds.")
        return delay_ms / 1000

    def _timeout(self, request: ModelRequest) -> ProviderTimeout:
        delay_ms = request.params.get("delay_ms")
        return ProviderTimeout(f"echo: no answer within {request.timeout_seconds:g} s (delay_ms={delay_ms}).")

    def _answer(self, request: ModelRequest, started: float) -> ModelResponse:
        input_words = len(request.prompt.split()) + len((request.system or "").split())
        output_words = len(request.prompt.split())
        return ModelResponse(
            content=request.prompt,
            tokens=TokenUsage.of(input_words, output_words).as_dict(),
            latency_ms=int((time.monotonic() - started) * 1000),
            finish_reason="stop",
        )


register(EchoAdapter())
