"""Provider adapters used by the durability tests inside real worker processes.

Loaded by workers through PROMPTPILOT_PROVIDER_MODULES. They are real adapters behind the
real registry; what they add is evidence: every call is appended to a log file shared by
all processes, so a test can count provider calls across workers.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from providers.registry import register
from providers.types import ModelRequest, ModelResponse

LOG_ENV = "PROMPTPILOT_PROBE_LOG"


def _log(event: str, request: ModelRequest) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "prompt": request.prompt, "t": time.time()})
    with Path(path).open("a") as fh:  # O_APPEND: whole lines, even from several processes
        fh.write(line + "\n")


class ProbeAdapter:
    """Answers like echo, after ``delay_ms``, and records each call and its end. With
    ``hold_until`` (a file path) it answers as soon as that file exists instead (at most
    ``delay_ms``): a test holds calls in flight for exactly as long as it needs them."""

    name = "probe"

    def complete(self, request: ModelRequest) -> ModelResponse:
        _log("call", request)
        delay_ms = request.params.get("delay_ms", 0)
        gate = request.params.get("hold_until")
        if gate:
            deadline = time.monotonic() + delay_ms / 1000
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(delay_ms / 1000)
        _log("done", request)
        words = len(request.prompt.split())
        return ModelResponse(content=request.prompt, tokens={"input": words, "output": words, "total": 2 * words},
                             latency_ms=int(delay_ms), finish_reason="stop")


class CrashAdapter:
    """Kills the process that runs it, like a segfault or the OOM killer would."""

    name = "crash"

    def complete(self, request: ModelRequest) -> ModelResponse:
        _log("call", request)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class FlakyAdapter:
    """Fails with a retryable 503 for the first ``fail_times`` calls of a prompt, then answers."""

    name = "flaky"

    def complete(self, request: ModelRequest) -> ModelResponse:
        from providers.errors import ProviderUnavailable

        path = os.environ.get(LOG_ENV)
        earlier = [c for c in read_calls(path) if c["prompt"] == request.prompt and c["event"] == "call"] if path else []
        _log("call", request)
        if len(earlier) < int(request.params.get("fail_times", 1)):
            raise ProviderUnavailable("flaky: 503 Service Unavailable", status_code=503)
        words = len(request.prompt.split())
        return ModelResponse(content=request.prompt, tokens={"input": words, "output": words, "total": 2 * words},
                             latency_ms=0, finish_reason="stop")


register(ProbeAdapter())
register(FlakyAdapter())
register(CrashAdapter())


def read_calls(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
