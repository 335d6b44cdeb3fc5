"""Every secret stored encrypted (``crypto.encrypt``), and re-encrypting them all under the
current key after a rotation of ``PROMPTPILOT_SECRETS_KEY`` (``manage.py reencrypt_secrets``).

Each app registers its encrypted columns in its ``AppConfig.ready`` with
``encrypted_field_register``; a test checks that every model field named ``*_encrypted``
is registered, so a new one cannot be forgotten by the rotation.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.apps import apps

from . import crypto


@dataclass(frozen=True)
class EncryptedField:
    model: str  # "app_label.ModelName"
    field: str
    purpose: str  # the ``purpose`` given to crypto.encrypt
    label: str  # for people: "webhook signing secrets"

    @property
    def name(self) -> str:
        return f"{self.model}.{self.field}"


_registry: dict[str, EncryptedField] = {}


def encrypted_field_register(*, model: str, field: str, purpose: str, label: str) -> None:
    entry = EncryptedField(model=model, field=field, purpose=purpose, label=label)
    _registry[entry.name] = entry


def encrypted_fields() -> list[EncryptedField]:
    return sorted(_registry.values(), key=lambda entry: entry.name)


@dataclass
class FieldReport:
    """What one run found in one column. ``reencrypted`` counts what was (or, in a dry
    run, would be) written; ``changed_meanwhile`` rows were saved by someone else between
    the read and the write (that save used the current key)."""

    entry: EncryptedField
    stored: int = 0
    current: int = 0
    reencrypted: int = 0
    changed_meanwhile: int = 0
    unreadable: list[str] = field(default_factory=list)  # primary keys, as text


def _stored_tokens(entry: EncryptedField) -> Iterator[tuple[object, str]]:
    model = apps.get_model(entry.model)
    rows = (model._default_manager.exclude(**{f"{entry.field}__isnull": True}).exclude(**{entry.field: ""})
            .order_by("pk").values_list("pk", entry.field))
    yield from rows.iterator(chunk_size=500)


def _reencrypt_field(entry: EncryptedField, *, dry_run: bool) -> FieldReport:
    report = FieldReport(entry)
    manager = apps.get_model(entry.model)._default_manager
    for pk, token in _stored_tokens(entry):
        report.stored += 1
        try:
            index = crypto.key_index(token, purpose=entry.purpose)
        except crypto.DecryptionError:
            report.unreadable.append(str(pk))
            continue
        if index == 0:
            report.current += 1  # already under the current key: a second run writes nothing
            continue
        if dry_run:
            report.reencrypted += 1
            continue
        fresh = crypto.reencrypt(token, purpose=entry.purpose)
        # Compare-and-set: a secret rotated or re-entered since the read is left as saved.
        # update() on purpose: no save() signals, updated_at unchanged (nothing a user changed).
        if manager.filter(pk=pk, **{entry.field: token}).update(**{entry.field: fresh}):
            report.reencrypted += 1
        else:
            report.changed_meanwhile += 1
    return report


def secrets_reencrypt(*, dry_run: bool = False) -> list[FieldReport]:
    """Re-encrypt every registered secret that an older configured key opens under the
    first key of ``PROMPTPILOT_SECRETS_KEY``; one report per column. Secrets no configured
    key opens are reported, never changed. Safe to run again and while the app serves."""
    return [_reencrypt_field(entry, dry_run=dry_run) for entry in encrypted_fields()]
