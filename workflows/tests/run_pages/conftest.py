"""Fixtures of the execution and prompt page tests: logged-in Django test clients."""
from __future__ import annotations

import pytest
from django.test import Client

from workflows.tests.support.browser import browser, builder, tab  # noqa: F401  (browser tests)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def page(user) -> Client:
    """The owner's browser session."""
    return _client(user)


@pytest.fixture
def other_page(other_user) -> Client:
    return _client(other_user)


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(username="ops", password="pw-ops-123", is_staff=True)


@pytest.fixture
def staff_page(staff_user) -> Client:
    return _client(staff_user)
