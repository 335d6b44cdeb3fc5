"""The built-in offline provider: answers with the prompt, unchanged.

Deterministic, so tests and demos can assert exact outputs; ``delay_ms`` makes it slow
for demos of long steps; tokens are word counts.
"""
from __future__ import annotations

import time

from ..errors import BadRequest, ProviderTimeout
from ..registry import register
from ..types import ModelRequest, ModelResponse


class EchoAdapter:
    name = "echo"

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.monotonic()
        delay_ms = request.params.get("delay_ms", 0) or 0
        if not isinstance(delay_ms, (int, float)) or isinstance(delay_ms, bool) or delay_ms < 0:
            raise BadRequest("echo: delay_ms must be a non-negative number of milliseconds.")
        if delay_ms / 1000 > request.timeout_seconds:
            time.sleep(request.timeout_seconds)
            raise ProviderTimeout(f"echo: no answer within {request.timeout_seconds:g} s (delay_ms={delay_ms}).")
        if delay_ms:
            time.sleep(delay_ms / 1000)
        input_words = len(request.prompt.split()) + len((request.system or "").split())
        output_words = len(request.prompt.split())
        return ModelResponse(
            content=request.prompt,
            tokens={"input": input_words, "output": output_words, "total": input_words + output_words},
            latency_ms=int((time.monotonic() - started) * 1000),
            finish_reason="stop",
        )


register(EchoAdapter())
