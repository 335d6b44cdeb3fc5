"""Fixtures for the provider tests: a fake server per test, settings pointing each
provider at it, and ``wire``, which runs a test once per provider."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from providers.clients import clear_clients

from .fakes import FakeServer
from .wires import WIRES, Wire


@pytest.fixture(autouse=True)
def fresh_clients() -> Iterator[None]:
    clear_clients()
    yield
    clear_clients()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def provider_settings(settings) -> Callable[..., None]:
    """``provider_settings(OPENAI_API_KEY="k", ...)`` replaces settings.PROMPTPILOT["PROVIDERS"]."""

    def configure(**values: str) -> None:
        settings.PROMPTPILOT = {**settings.PROMPTPILOT, "PROVIDERS": values}

    return configure


@pytest.fixture(params=WIRES, ids=[wire.provider for wire in WIRES])
def wire(request, fake_server, provider_settings) -> Wire:
    """Each provider in turn, configured against ``fake_server``."""
    chosen: Wire = request.param
    provider_settings(**chosen.settings(fake_server))
    return chosen
