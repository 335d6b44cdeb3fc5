"""providers/registry.py: the SDK adapters are registered, and loading them stays cheap."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from providers import registry
from providers.adapters.anthropic import AnthropicAdapter
from providers.adapters.gemini import GeminiAdapter
from providers.adapters.openai import OpenAIAdapter, OpenAICompatibleAdapter
from providers.credentials import ANTHROPIC, GEMINI, OPENAI
from providers.registry import get_adapter, known_providers
from providers.types import ModelRequest

from .fakes import Reply, openai_completion

ROOT = Path(__file__).resolve().parents[2]


def test_sdk_adapters_are_registered_by_name() -> None:
    assert {"echo", "openai", "anthropic", "gemini"} <= set(known_providers())
    assert isinstance(get_adapter("openai"), OpenAIAdapter)
    assert isinstance(get_adapter("anthropic"), AnthropicAdapter)
    assert isinstance(get_adapter("gemini"), GeminiAdapter)


SCRIPT = """
import sys
from providers.registry import get_adapter
get_adapter("echo")
print(",".join(sorted(m for m in ("openai", "anthropic", "google.genai") if m in sys.modules)))
"""


def test_loading_the_registry_does_not_import_the_sdks() -> None:
    # An echo-only process (and every engine test) should not pay ~2 s of SDK imports.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_a_compatible_connection_registered_by_name_is_found(fake_server) -> None:
    fake_server.queue(Reply(200, openai_completion("hi from ollama")))
    registry.register(OpenAICompatibleAdapter("test-ollama", fake_server.url + "/v1", None))
    try:
        response = get_adapter("test-ollama").complete(
            ModelRequest(provider="test-ollama", model="llama3", prompt="hi", timeout_seconds=5)
        )
    finally:
        registry._adapters.pop("test-ollama", None)

    assert response.content == "hi from ollama"


def test_every_docs_link_in_error_messages_has_its_section() -> None:
    headings = set(re.findall(r"^## (\S+)\s*$", (ROOT / "docs" / "PROVIDERS.md").read_text(), re.M))
    anchors = {spec.docs_anchor for spec in (OPENAI, ANTHROPIC, GEMINI)} | {"openai-compatible", "echo"}
    assert anchors <= headings
