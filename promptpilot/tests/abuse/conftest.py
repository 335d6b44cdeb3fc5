"""Fixtures of the abuse suite: a workflow with a NUMBER and a STRING variable, made as
a builder would, and its triggers (the trigger tests' own, triggers/tests/fixtures.py)."""
from __future__ import annotations

from triggers.tests.fixtures import anon, api_trigger, webhook, workflow  # noqa: F401  (fixtures: registered by import)
