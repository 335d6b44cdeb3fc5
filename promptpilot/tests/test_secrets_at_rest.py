"""Re-encrypting stored secrets after a rotation of PROMPTPILOT_SECRETS_KEY
(promptpilot/common/secrets_at_rest.py, ``manage.py reencrypt_secrets``): once it has run,
the old key can go and every webhook, connection and HTTP credential still works."""
from __future__ import annotations

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from promptpilot.common import crypto
from promptpilot.common.secrets_at_rest import encrypted_fields
from providers import connections
from providers.models import ProviderConnection
from triggers.models import WorkflowTrigger
from triggers.services.triggers import trigger_rotate_secret
from triggers.tests.helpers import body_bytes, create_trigger, customer_workflow, deliver, signed_headers
from workflows.models import HttpCredential

pytestmark = pytest.mark.django_db

OLD, NEW = "the-old-secrets-key", "the-new-secrets-key"
API_KEY = "sk-connection-key-for-the-test"
HEADERS = {"Authorization": "Bearer crm-token-for-the-test"}
SECRET_COLUMNS = (
    (WorkflowTrigger, "secret_encrypted"), (WorkflowTrigger, "previous_secret_encrypted"),
    (ProviderConnection, "api_key_encrypted"), (HttpCredential, "headers_encrypted"),
)


@pytest.fixture
def keys(settings):
    """Sets the configured keys, as PROMPTPILOT_SECRETS_KEY on a restarted process would."""
    def configure(*values: str) -> None:
        settings.PROMPTPILOT_SECRETS_KEYS = list(values)
        connections.clear_cache()
    yield configure
    connections.clear_cache()


@pytest.fixture
def stored(keys, user):
    """One secret of each kind, saved under OLD: a webhook trigger rotated with a grace
    period (so a previous secret is stored too), a connection key, HTTP credential headers."""
    keys(OLD)
    trigger, first_secret = create_trigger(customer_workflow(user), "WEBHOOK", name="orders")
    trigger, second_secret = trigger_rotate_secret(trigger=trigger, grace_seconds=3600)
    connection = ProviderConnection(name="local-llm", base_url="http://127.0.0.1:9/v1")
    connection.set_api_key(API_KEY)
    connection.save()
    credential = HttpCredential(name="crm-api", hosts="api.example.com")
    credential.set_headers(HEADERS)
    credential.save()
    return {"trigger": trigger, "secrets": (first_secret, second_secret), "connection": connection,
            "credential": credential}


def _tokens() -> dict[str, list[str]]:
    return {f"{model.__name__}.{field}": sorted(model.objects.exclude(**{field: ""}).values_list(field, flat=True))
            for model, field in SECRET_COLUMNS}


def _run(*args: str) -> str:
    out = StringIO()
    call_command("reencrypt_secrets", *args, stdout=out)
    return out.getvalue()


def _connection_key(name: str) -> str:
    seen = {}
    connections.connection_adapter(name, factory=lambda n, url, key: seen.setdefault("key", key))
    return seen["key"]


def test_every_encrypted_model_field_is_registered():
    columns = {f"{model._meta.label}.{field.name}" for model in apps.get_models()
               for field in model._meta.get_fields() if field.name.endswith("_encrypted")}
    assert columns == {entry.name for entry in encrypted_fields()}


def test_after_reencrypting_the_old_key_can_go_and_every_secret_still_works(stored, keys):
    keys(NEW, OLD)
    output = _run()
    assert "Total: 4 re-encrypted, 0 already current, 0 unreadable." in output
    assert "webhook signing secrets (triggers.WorkflowTrigger.secret_encrypted): 1 stored, 1 re-encrypted" in output

    keys(NEW)  # the old key removed everywhere
    body = body_bytes({"customer": "Ada"})
    for secret in stored["secrets"]:  # the current secret and the previous one, within its grace period
        response = deliver(APIClient(), stored["trigger"].pk, body, signed_headers(secret, body))
        assert response.status_code == 202, response.content
    assert _connection_key("local-llm") == API_KEY
    assert HttpCredential.objects.get(pk=stored["credential"].pk).headers() == HEADERS
    for model, field in SECRET_COLUMNS:
        token = model.objects.values_list(field, flat=True).get()
        assert crypto.key_index(token, purpose=next(e.purpose for e in encrypted_fields()
                                                   if e.name == f"{model._meta.label}.{field}")) == 0


def test_a_second_run_changes_nothing(stored, keys):
    keys(NEW, OLD)
    _run()
    before = _tokens()
    output = _run()
    assert "Total: 0 re-encrypted, 4 already current, 0 unreadable." in output
    assert _tokens() == before


def test_a_dry_run_counts_and_writes_nothing(stored, keys):
    before = _tokens()
    keys(NEW, OLD)
    output = _run("--dry-run")
    assert "Dry run: nothing is written." in output
    assert "Total: 4 to re-encrypt, 0 already current, 0 unreadable." in output
    assert _tokens() == before
    keys(NEW)
    with pytest.raises(crypto.DecryptionError):
        HttpCredential.objects.get(pk=stored["credential"].pk).headers()


def test_a_secret_no_key_opens_is_reported_left_alone_and_fails_the_command(stored, keys):
    keys("a-key-nobody-has-any-more")
    lost = ProviderConnection(name="lost-llm", base_url="http://127.0.0.1:9/v1")
    lost.set_api_key("sk-lost")
    lost.save()
    lost_token = ProviderConnection.objects.values_list("api_key_encrypted", flat=True).get(pk=lost.pk)

    keys(NEW, OLD)
    out = StringIO()
    with pytest.raises(CommandError, match="1 stored secret.s. open with none of the configured keys"):
        call_command("reencrypt_secrets", stdout=out)
    output = out.getvalue()
    assert "connection API keys (providers.ProviderConnection.api_key_encrypted): 2 stored, 1 re-encrypted, " \
           "0 already current, 1 unreadable" in output
    assert f"unreadable ids: {lost.pk}" in output
    assert "Total: 4 re-encrypted" in output, "the readable ones are re-encrypted all the same"
    assert ProviderConnection.objects.values_list("api_key_encrypted", flat=True).get(pk=lost.pk) == lost_token


def test_with_one_key_it_says_there_is_nothing_to_rotate(stored, keys):
    output = _run()
    assert "Only one key" in output and "Total: 0 re-encrypted, 4 already current, 0 unreadable." in output
