"""Fixtures of a builder's workflow and its triggers, shared by the trigger tests and the
abuse suite (promptpilot/tests/abuse): each conftest imports the ones it uses."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from .helpers import create_trigger, customer_workflow


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def workflow(user):
    """Variables ``customer`` (required STRING) and ``amount`` (optional NUMBER), made as a
    builder would."""
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
