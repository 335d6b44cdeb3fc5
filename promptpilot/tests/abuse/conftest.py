"""Fixtures of the abuse suite: a workflow with a NUMBER and a STRING variable, made as
a builder would, and its triggers."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from triggers.tests.helpers import create_trigger, customer_workflow


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def workflow(user):
    """Variables ``customer`` (required STRING) and ``amount`` (optional NUMBER)."""
    return customer_workflow(user)


@pytest.fixture
def webhook(workflow):
    return create_trigger(workflow, "WEBHOOK", name="Orders")


@pytest.fixture
def api_trigger(workflow):
    return create_trigger(workflow, "API", name="Partner API")
