"""providers/types.py: TokenUsage, the one shape of token counts."""
from __future__ import annotations

import pytest

from providers.types import TokenUsage


def test_total_defaults_to_the_sum() -> None:
    assert TokenUsage.of(3, 4).as_dict() == {"input": 3, "output": 4, "total": 7}
    assert TokenUsage.of(None, None).as_dict() == {"input": 0, "output": 0, "total": 0}
    assert TokenUsage.of(3, 4, 9).as_dict() == {"input": 3, "output": 4, "total": 9}


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, (0, 0, 0)),
        ("12", (0, 0, 0)),
        ({}, (0, 0, 0)),
        ({"input": 5}, (5, 0, 5)),
        ({"input": "5", "output": None, "total": ""}, (5, 0, 5)),
        ({"input": "many", "output": [1], "total": 3}, (0, 0, 3)),
        ({"input": 2, "output": 3, "total": 10, "cost_usd": 0.1, "estimated": True}, (2, 3, 10)),
    ],
)
def test_from_raw_tolerates_whatever_a_provider_or_a_row_holds(raw, expected) -> None:
    used = TokenUsage.from_raw(raw)
    assert (used.input, used.output, used.total) == expected


def test_from_raw_of_a_token_usage_is_itself() -> None:
    used = TokenUsage.of(1, 2)
    assert TokenUsage.from_raw(used) is used


def test_usages_add_up_key_by_key() -> None:
    assert (TokenUsage.of(1, 2) + TokenUsage.of(3, 4, 10)).as_dict() == {"input": 4, "output": 6, "total": 13}
    assert TokenUsage.total_of([{"input": 1, "output": 1}, None, {"total": 5}]) == TokenUsage(1, 1, 7)
    assert TokenUsage.total_of([]) == TokenUsage()


def test_spent_is_any_count_above_zero() -> None:
    assert not TokenUsage().spent
    assert not TokenUsage.from_raw({"input": 0, "output": None}).spent
    assert TokenUsage.from_raw({"output": 1}).spent
