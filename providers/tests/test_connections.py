"""OpenAI-compatible connections defined in admin: encrypted keys (promptpilot/common/crypto.py),
resolution by name through the registry (providers/connections.py), and the admin form."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.exceptions import ValidationError

from promptpilot.common import crypto
from providers import connections
from providers.errors import MissingCredentials, UnknownProvider
from providers.models import ProviderConnection
from providers.registry import get_adapter
from providers.types import ModelRequest

from .fakes import Reply, openai_completion

SECRET = "sk-conn-0123456789abcdef"


@pytest.fixture(autouse=True)
def fresh_connections() -> Iterator[None]:
    connections.clear_cache()
    yield
    connections.clear_cache()


def _connection(name: str = "local-llm", base_url: str = "http://127.0.0.1:9/v1", api_key: str = SECRET,
                **fields) -> ProviderConnection:
    connection = ProviderConnection(name=name, base_url=base_url, **fields)
    connection.set_api_key(api_key)
    connection.save()
    return connection


class TinyAdapter:
    """Stands in for OpenAICompatibleAdapter: records what it was built with."""

    built: list[tuple[str, str, str]] = []

    def __init__(self, name: str, base_url: str, api_key: str) -> None:
        self.name, self.base_url, self.api_key = name, base_url, api_key
        TinyAdapter.built.append((name, base_url, api_key))


@pytest.fixture
def tiny() -> type[TinyAdapter]:
    TinyAdapter.built = []
    return TinyAdapter


# --- crypto ----------------------------------------------------------------------------------


def test_encrypt_round_trips_and_hides_the_plaintext():
    token = crypto.encrypt(SECRET, purpose="test")
    assert SECRET not in token
    assert crypto.decrypt(token, purpose="test") == SECRET
    assert crypto.encrypt(SECRET, purpose="test") != token  # random IV: equal secrets do not look equal


def test_a_token_made_for_one_purpose_does_not_open_for_another():
    token = crypto.encrypt(SECRET, purpose="providers.connections.api_key")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token, purpose="triggers.secrets")


def test_keys_rotate_by_prepending_a_new_one(settings):
    settings.PROMPTPILOT_SECRETS_KEYS = ["old-key"]
    token = crypto.encrypt(SECRET, purpose="test")
    settings.PROMPTPILOT_SECRETS_KEYS = ["new-key", "old-key"]
    assert crypto.decrypt(token, purpose="test") == SECRET
    settings.PROMPTPILOT_SECRETS_KEYS = ["new-key"]
    with pytest.raises(crypto.DecryptionError, match="PROMPTPILOT_SECRETS_KEY"):
        crypto.decrypt(token, purpose="test")


def test_the_default_key_is_derived_from_the_secret_key(settings):
    settings.PROMPTPILOT_SECRETS_KEYS = []
    settings.SECRET_KEY = "django-secret-1"
    token = crypto.encrypt(SECRET, purpose="test")
    settings.SECRET_KEY = "django-secret-2"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token, purpose="test")


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_key_is_stored_encrypted():
    connection = _connection()
    stored = ProviderConnection.objects.values_list("api_key_encrypted", flat=True).get(pk=connection.pk)
    assert stored and SECRET not in stored
    assert ProviderConnection.objects.get(pk=connection.pk).api_key() == SECRET
    connection.set_api_key("")
    assert connection.api_key() == "" and not connection.has_api_key


@pytest.mark.django_db
def test_a_connection_cannot_take_a_built_in_name_or_a_bad_url():
    with pytest.raises(ValidationError) as caught:
        ProviderConnection(name="openai", base_url="ftp://x").full_clean()
    assert set(caught.value.message_dict) == {"name", "base_url"}
    ProviderConnection(name="vllm-gpu", base_url="http://vllm:8000/v1").full_clean()  # no TLD needed


# --- resolution -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_connection_resolves_to_an_adapter_built_with_its_url_and_decrypted_key(tiny):
    _connection()
    adapter = connections.connection_adapter("local-llm", factory=tiny)
    assert (adapter.name, adapter.base_url, adapter.api_key) == ("local-llm", "http://127.0.0.1:9/v1", SECRET)
    assert connections.connection_adapter("not-a-connection", factory=tiny) is None


@pytest.mark.django_db
def test_the_adapter_is_built_once_and_rebuilt_when_the_key_or_url_changes(tiny):
    connection = _connection()
    first = connections.connection_adapter("local-llm", factory=tiny)
    assert connections.connection_adapter("local-llm", factory=tiny) is first
    connection.set_api_key("sk-rotated")
    connection.save()
    rotated = connections.connection_adapter("local-llm", factory=tiny)
    assert rotated is not first and rotated.api_key == "sk-rotated"
    connection.base_url = "http://127.0.0.1:10/v1"
    connection.save()
    moved = connections.connection_adapter("local-llm", factory=tiny)
    assert moved.base_url == "http://127.0.0.1:10/v1"
    assert len(tiny.built) == 3


@pytest.mark.django_db
def test_an_inactive_connection_is_an_unknown_provider_that_says_so(tiny):
    _connection(is_active=False)
    with pytest.raises(UnknownProvider, match="inactive"):
        connections.connection_adapter("local-llm", factory=tiny)


@pytest.mark.django_db
def test_a_key_that_no_longer_decrypts_is_a_missing_credential_naming_the_connection(settings, tiny):
    _connection()
    settings.PROMPTPILOT_SECRETS_KEYS = ["a-new-key"]
    with pytest.raises(MissingCredentials) as caught:
        connections.connection_adapter("local-llm", factory=tiny)
    assert "local-llm" in caught.value.message and SECRET not in caught.value.message
    assert caught.value.retryable is False


@pytest.mark.django_db
def test_get_adapter_finds_connections_after_built_ins_and_lists_them_when_unknown():
    _connection(name="ollama-local")
    assert get_adapter("echo").name == "echo"  # built-ins first
    adapter = get_adapter("ollama-local")
    assert adapter.name == "ollama-local"
    assert get_adapter("ollama-local") is adapter  # reused: its SDK client and pool too
    with pytest.raises(UnknownProvider) as caught:
        get_adapter("ollama-remote")
    assert "ollama-local" in caught.value.message and "echo" in caught.value.message


def test_without_database_access_there_are_simply_no_connections():
    # Engine unit tests (and processes without Django's database) still get UnknownProvider.
    with pytest.raises(UnknownProvider):
        get_adapter("nope-no-such-provider")


@pytest.mark.django_db
def test_a_connection_calls_its_server_with_its_key(fake_server):
    fake_server.queue(Reply(200, openai_completion("hello from the connection", prompt_tokens=7,
                                                   completion_tokens=3)))
    _connection(name="fake-compatible", base_url=f"{fake_server.url}/v1")
    response = get_adapter("fake-compatible").complete(
        ModelRequest(provider="fake-compatible", model="llama3.2", prompt="hi", timeout_seconds=5)
    )
    assert response.content == "hello from the connection"
    assert response.tokens == {"input": 7, "output": 3, "total": 10}
    (request,) = fake_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json["model"] == "llama3.2"


# --- admin -----------------------------------------------------------------------------------------


ADD_URL = "/admin/providers/providerconnection/add/"


@pytest.mark.django_db
def test_admin_stores_the_key_encrypted_and_never_shows_it_back(admin_client):
    response = admin_client.post(ADD_URL, {"name": "openrouter", "base_url": "https://openrouter.ai/api/v1",
                                           "is_active": "on", "api_key": SECRET})
    assert response.status_code == 302, response.content[:3000]
    connection = ProviderConnection.objects.get(name="openrouter")
    assert connection.api_key() == SECRET
    for url in (f"/admin/providers/providerconnection/{connection.pk}/change/",
                "/admin/providers/providerconnection/"):
        page = admin_client.get(url)
        assert page.status_code == 200
        assert SECRET.encode() not in page.content
        assert connection.api_key_encrypted.encode() not in page.content
    assert b"API key (leave blank to keep)" in admin_client.get(
        f"/admin/providers/providerconnection/{connection.pk}/change/").content


@pytest.mark.django_db
def test_admin_keeps_the_key_when_left_blank_and_removes_it_on_request(admin_client):
    connection = _connection(name="lm-studio", base_url="http://127.0.0.1:1234/v1")
    url = f"/admin/providers/providerconnection/{connection.pk}/change/"
    form = {"name": "lm-studio", "base_url": "http://127.0.0.1:1235/v1", "is_active": "on", "api_key": ""}
    assert admin_client.post(url, form).status_code == 302
    connection.refresh_from_db()
    assert connection.base_url.endswith(":1235/v1") and connection.api_key() == SECRET
    assert admin_client.post(url, {**form, "remove_api_key": "on"}).status_code == 302
    connection.refresh_from_db()
    assert not connection.has_api_key


@pytest.mark.django_db
def test_admin_refuses_a_built_in_name(admin_client):
    response = admin_client.post(ADD_URL, {"name": "anthropic", "base_url": "http://x:1/v1", "api_key": "k"})
    assert response.status_code == 200 and b"built-in provider" in response.content
    assert not ProviderConnection.objects.exists()
