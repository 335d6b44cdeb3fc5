"""Fixtures of the page tests: a logged-in Django test client per user."""
from __future__ import annotations

import pytest
from django.test import Client

from workflows.tests.support.browser import browser  # noqa: F401  (the shared chromium fixture)


@pytest.fixture
def page(user) -> Client:
    """The owner's browser session (test client, logged in)."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def other_page(other_user) -> Client:
    client = Client()
    client.force_login(other_user)
    return client
