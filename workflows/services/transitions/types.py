"""What the transitions hand back to the orchestration that drives them."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ...engine.types import RunContext


@dataclass
class Claimed:
    """A claimed attempt (its row RUNNING under this worker's lease): what it needs to run
    and to be checkpointed."""

    step_execution_id: str
    attempt: int
    step_name: str
    execution_id: uuid.UUID
    workflow_id: int
    version_id: int
    step_tokens: dict
    context: RunContext
    item_index: int | None = None  # a MAP step's item: which one, and its value
    item: Any = None


@dataclass
class Checkpointed:
    """A checkpoint's outcome: ``outcome`` is "checkpointed", "retry-scheduled",
    "deferred" (waiting for a shared rate-limit slot), "fanned-out" (a MAP step's items
    were created and the first ones sent) or "rejected" (fenced off or cancelled); ``next_claimed`` the next step, already claimed
    for the same task (RUNNING under its lease), when it asked for one and may have it."""

    outcome: str
    next_claimed: Claimed | None = None
    finished: bool = False  # the run ended COMPLETED with this step (PostgreSQL statements)
    capped: bool | None = None  # and its workflow has max_concurrent_executions (None: not read)
