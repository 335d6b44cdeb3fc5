"""Secrets HTTP steps send as headers, defined by staff and referenced by name."""
from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import models

from promptpilot.common import crypto
from promptpilot.common.models import TimeStampedModel

HEADERS_PURPOSE = "workflows.http_credentials.headers"


def parse_hosts(text: str) -> list[str]:
    """``hosts`` as a list: one a line or comma separated, lower case."""
    return [item.strip().lower() for item in text.replace(",", "\n").splitlines() if item.strip()]


class HttpCredential(TimeStampedModel):
    """Headers (``Authorization: Bearer ...``, ``X-Api-Key: ...``) an HTTP step adds when its
    config names this credential: ``{"credential": "billing-api"}``. Stored encrypted;
    sent only to ``hosts``; never shown, rendered into templates, recorded or logged."""

    name = models.SlugField(
        "name", max_length=100, unique=True,
        help_text='What HTTP steps put in config.credential, e.g. "billing-api". Letters, digits, - and _.',
    )
    description = models.TextField(
        "description", blank=True, default="", help_text="What the credential is for and who owns it (not secret).",
    )
    hosts = models.TextField(
        "hosts",
        help_text="The only hosts these headers are sent to, one a line: api.example.com (any port) or "
                  "api.example.com:8443. A step calling another host fails; a redirect elsewhere drops the headers.",
    )
    header_names = models.CharField(
        "header names", max_length=500, blank=True, default="", editable=False,
        help_text="The names of the stored headers (their values are never shown).",
    )
    headers_encrypted = models.TextField(
        "headers (encrypted)", blank=True, default="", editable=False,
        help_text="The headers as JSON, Fernet-encrypted with PROMPTPILOT_SECRETS_KEY (else DJANGO_SECRET_KEY).",
    )

    class Meta:
        verbose_name = "HTTP credential"
        verbose_name_plural = "HTTP credentials"
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    def set_headers(self, headers: dict[str, str]) -> None:
        """Store ``headers`` encrypted. Call ``save()`` after."""
        self.headers_encrypted = crypto.encrypt(json.dumps(headers), purpose=HEADERS_PURPOSE) if headers else ""
        self.header_names = ", ".join(sorted(headers))

    def headers(self) -> dict[str, str]:
        """The decrypted headers. Raises ``crypto.DecryptionError``."""
        if not self.headers_encrypted:
            return {}
        return json.loads(crypto.decrypt(self.headers_encrypted, purpose=HEADERS_PURPOSE))

    def host_list(self) -> list[str]:
        return parse_hosts(self.hosts)

    def clean(self) -> None:
        super().clean()
        if not self.host_list():
            raise ValidationError({"hosts": "Name at least one host these headers may be sent to."})
