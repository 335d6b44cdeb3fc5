"""The work of one benchmark step, and the raw Celery chain that runs it (mode b).

Shared by every mode of ``bench/engine.py`` so that they all do exactly the same work
per step: render the step's template with the project's sandboxed Jinja2 and call the
``echo`` adapter. The raw chain adds one PostgreSQL INSERT per step and nothing else:
no claim, no lease, no fencing, no checkpoint of the run.

The worker imports this module with ``celery -A promptpilot worker -I bench.raw_chain``.
"""
from __future__ import annotations

import time
from typing import Any

from promptpilot.celery import app

STEPS = 5
MODEL = {"provider": "echo", "model": "echo"}
RAW_TABLE = "bench_raw_steps"


def step_name(index: int) -> str:
    return f"s{index}"


def step_template(index: int) -> str:
    """Step 1 reads the input; every later step also reads the previous step's output."""
    if index == 1:
        return "Step 1: summarise {{ input.x }}."
    return f"Step {index} on {{{{ input.x }}}} after: {{{{ steps.{step_name(index - 1)}.output }}}}"


def template_context(index: int, x: str, previous: str | None) -> dict[str, Any]:
    steps = {} if index == 1 else {step_name(index - 1): {"output": previous, "outputs": None, "status": "COMPLETED"}}
    return {"input": {"x": x}, "steps": steps, "trigger": {"type": "MANUAL", "payload": None}}


def compute_step(index: int, x: str, previous: str | None) -> str:
    """Render the step's template and call the echo adapter: the work every mode does."""
    from providers.registry import get_adapter
    from providers.types import ModelRequest
    from workflows.engine.templating import render

    prompt = render(step_template(index), template_context(index, x, previous))
    response = get_adapter(MODEL["provider"]).complete(
        ModelRequest(provider=MODEL["provider"], model=MODEL["model"], prompt=prompt)
    )
    return response.content


CREATE_TABLE_SQL = f"""
CREATE TABLE IF NOT EXISTS {RAW_TABLE} (
    id bigserial PRIMARY KEY,
    batch text NOT NULL,
    run_id text NOT NULL,
    step integer NOT NULL,
    output text NOT NULL,
    done_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS {RAW_TABLE}_batch_step ON {RAW_TABLE} (batch, step);
CREATE INDEX IF NOT EXISTS {RAW_TABLE}_run ON {RAW_TABLE} (run_id);
"""


@app.task(name="bench.raw_step", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def raw_step(previous: str | None, batch: str, run_id: str, index: int, x: str) -> str:
    """One link of the raw chain: compute, write one row (autocommit), hand the output on.

    The row of the last step (``step == STEPS``) is the run's completion record.
    """
    from django.db import connection

    output = compute_step(index, x, previous)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RAW_TABLE} (batch, run_id, step, output, done_at) VALUES (%s, %s, %s, %s, %s)",
            [batch, run_id, index, output, time.time()],
        )
    return output


def raw_chain(batch: str, run_id: str, x: str):
    """The 5-step chain; Celery passes each task's return value to the next one."""
    from celery import chain

    first = raw_step.s(None, batch, run_id, 1, x)
    return chain(first, *(raw_step.s(batch, run_id, index, x) for index in range(2, STEPS + 1)))
