"""Shared fixtures for the whole suite."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="builder", password="pw-builder-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="intruder", password="pw-intruder-123")


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def other_api(other_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(other_user)
    return client
