"""API keys (``triggers/services/api_keys.py``): generated, stored as prefix + hash, compared in constant time."""
from __future__ import annotations

import hashlib

import pytest

from triggers.models import WorkflowTrigger
from triggers.services.api_keys import api_key_generate, api_key_matches, parse_rate


def test_generated_key_shape_prefix_and_hash():
    key, prefix, digest = api_key_generate()
    assert key.startswith("pp_") and len(key) == 3 + 43
    assert key.startswith(prefix) and len(prefix) == 11
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert api_key_generate()[0] != key


def test_key_matches_only_its_own_hash():
    key, prefix, digest = api_key_generate()
    trigger = WorkflowTrigger(api_key_prefix=prefix, api_key_hash=digest)
    assert api_key_matches(trigger=trigger, key=key)
    assert not api_key_matches(trigger=trigger, key=key + "x")
    assert not api_key_matches(trigger=trigger, key="")
    assert not api_key_matches(trigger=trigger, key=None)
    assert not api_key_matches(trigger=WorkflowTrigger(), key=key)  # no key stored: nothing matches


@pytest.mark.parametrize(("rate", "expected"), [("60/min", (60, 60)), ("5/s", (5, 1)), ("100/hour", (100, 3600)),
                                                ("1/day", (1, 86400)), ("10/minutes", (10, 60)), (" 3 / m ", (3, 60))])
def test_parse_rate(rate, expected):
    assert parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["60", "0/min", "60/moon", "-1/s", "a/min", 60, None, "60/min/s"])
def test_parse_rate_rejects(rate):
    with pytest.raises(ValueError, match="N/period"):
        parse_rate(rate)
