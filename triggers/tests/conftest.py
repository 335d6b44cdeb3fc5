"""Fixtures of the trigger tests (the shared ones live in the root conftest.py)."""
from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from .helpers import create_trigger, customer_workflow


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Throttle windows live in the default cache; no test inherits another's counts."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def workflow(user):
    return customer_workflow(user)


@pytest.fixture
def webhook(workflow):
    """``(trigger, secret)`` of an active WEBHOOK trigger on ``workflow``."""
    return create_trigger(workflow, "WEBHOOK", name="Orders")


@pytest.fixture
def api_trigger(workflow):
    """``(trigger, key)`` of an active API trigger on ``workflow``."""
    return create_trigger(workflow, "API", name="Partner API")


@pytest.fixture
def manual(workflow):
    return create_trigger(workflow, "MANUAL", name="Button")[0]
