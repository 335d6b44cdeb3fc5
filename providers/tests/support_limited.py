"""A slow provider for the shared rate-limit test, loaded into worker processes through
PROMPTPILOT_PROVIDER_MODULES.

Every call appends its start and end (time, pid, a call id) to the file named by
PROMPTPILOT_LIMIT_LOG, shared by all processes, so a test can check that calls from
different workers never overlapped.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from providers.registry import register
from providers.types import ModelRequest, ModelResponse

LOG_ENV = "PROMPTPILOT_LIMIT_LOG"
NAME = "limited-slow"


def _log(event: str, call_id: str, request: ModelRequest) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"event": event, "call": call_id, "pid": os.getpid(), "prompt": request.prompt,
                       "t": time.time()})
    with Path(path).open("a") as fh:  # O_APPEND: whole lines, even from several processes
        fh.write(line + "\n")


class SlowAdapter:
    """Answers like echo after ``delay_ms``, logging when each call starts and ends."""

    name = NAME

    def complete(self, request: ModelRequest) -> ModelResponse:
        call_id = uuid.uuid4().hex
        _log("start", call_id, request)
        time.sleep(float(request.params.get("delay_ms", 0)) / 1000)
        _log("end", call_id, request)
        words = len(request.prompt.split())
        return ModelResponse(content=request.prompt, tokens={"input": words, "output": words, "total": 2 * words},
                             latency_ms=int(request.params.get("delay_ms", 0)), finish_reason="stop")


register(SlowAdapter())


def read_log(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
