"""What HTTP steps need from Django: the network policy from settings and the staff-defined
credentials, handed to the engine as ``limits["http"]`` (engine/steps/http.py)."""
from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError

from promptpilot.common import crypto
from promptpilot.common.db import release_connection

from ..engine.errors import ConfigError, EngineError
from ..engine.http_client import HttpCredential, HttpPolicy
from ..models import HttpCredential as HttpCredentialRow

ADMIN_PATH = "admin → Workflows → HTTP credentials"


class CredentialUnavailable(EngineError):
    """The credentials table could not be read (a database blip): transient."""

    default_retryable = True


def http_credential_names() -> list[str]:
    return list(HttpCredentialRow.objects.order_by("name").values_list("name", flat=True))


def http_credential_get(*, name: str) -> HttpCredential:
    """The credential ``name`` with its headers decrypted; ``ConfigError`` (not retried)
    when there is none or its secret cannot be decrypted."""
    try:
        row = HttpCredentialRow.objects.filter(name=name).first()
    except DatabaseError as exc:
        raise CredentialUnavailable(f'Could not read the HTTP credential "{name}": {exc}') from exc
    if row is None:
        raise ConfigError(f'No HTTP credential is named "{name}". Staff add it in {ADMIN_PATH}.',
                          details={"credential": name})
    try:
        headers = row.headers()
    except crypto.DecryptionError as exc:
        raise ConfigError(f'The HTTP credential "{name}": {exc}', details={"credential": name}) from None
    return HttpCredential(name=row.name, headers=headers, hosts=frozenset(row.host_list()))


def http_policy() -> HttpPolicy:
    """The policy runs and previews hand HTTP steps: allowed hosts and limits from settings,
    credentials from the database, the thread's connection released before each call."""
    conf = settings.PROMPTPILOT
    return HttpPolicy.of(
        conf.get("HTTP_ALLOWED_HOSTS") or (),
        max_response_bytes=int(conf.get("HTTP_MAX_RESPONSE_BYTES") or 1024 * 1024),
        max_redirects=int(conf.get("HTTP_MAX_REDIRECTS", 5)),
        credentials=lambda name: http_credential_get(name=name),
        before_call=release_connection,
    )
