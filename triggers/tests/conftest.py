"""Fixtures of the trigger tests (the shared ones live in the root conftest.py)."""
from __future__ import annotations

import pytest
from django.core.cache import cache

from .fixtures import anon, api_trigger, manual, webhook, workflow  # noqa: F401  (fixtures: registered by import)


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Throttle windows live in the default cache; no test inherits another's counts."""
    cache.clear()
    yield
    cache.clear()
