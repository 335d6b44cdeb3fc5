"""The ``limits`` the engine's steps get (template caps, feature switches, the HTTP
policy), built the same way for a worker's step attempt and for a preview."""
from __future__ import annotations

from typing import Any

from django.conf import settings

from providers.flags import live_features

from ..engine.steps.http import DRY_RUN, HTTP_POLICY
from .http_steps import http_policy


def engine_limits(*, deadline: float | None = None, deadline_seconds: float | None = None,
                  max_seconds: float | None = None, dry_run: bool = False) -> dict[str, Any]:
    """``run_step``'s ``limits``. ``deadline`` (``time.monotonic()``): a run's step and
    workflow timeouts, by which its templates must be rendered (``deadline_seconds``: the
    budget it stands for, which a render that runs out names); ``max_seconds``: a cap per
    render (previews: the web tier stays free); ``dry_run``: HTTP steps send nothing."""
    conf = settings.PROMPTPILOT
    limits: dict[str, Any] = {
        "max_output_chars": conf["TEMPLATE_MAX_OUTPUT_CHARS"],
        "max_loop_iterations": conf["TEMPLATE_MAX_LOOP_ITERATIONS"],
        "features": live_features(),  # admin switches (workflow.multiModel), read when a step asks
        HTTP_POLICY: http_policy(),  # HTTP steps: allowed hosts, limits, credentials
        DRY_RUN: dry_run,
    }
    if deadline is not None:
        limits["deadline"] = deadline
        limits["deadline_seconds"] = deadline_seconds
    if max_seconds is not None:
        limits["max_seconds"] = max_seconds
    return limits
