"""Serializer fields that take JSON types as the OpenAPI document declares them.

DRF's CharField turns a number into text (``0`` becomes ``"0"``); the document says
``string``, so a client sending a number has made a mistake worth telling them about.
"""
from __future__ import annotations

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string (in quotes), got {kind}."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string", kind=_kind(data))
        return super().to_internal_value(data)


def _kind(data) -> str:
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, (int, float)):
        return "a number"
    if isinstance(data, str):
        return "a string"
    return "null" if data is None else type(data).__name__


class StrictBooleanField(serializers.BooleanField):
    """true or false only (DRF also takes 0, 1, "yes", "on"...)."""

    default_error_messages = {"not_a_boolean": "Must be true or false, got {kind}."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("not_a_boolean", kind=_kind(data))
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only (DRF also takes "5" and 5.0)."""

    default_error_messages = {"not_an_integer": "Must be a whole number (not in quotes), got {kind}."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_an_integer", kind=_kind(data))
        return super().to_internal_value(data)
