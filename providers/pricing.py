"""Token counts → US dollars, from the ``ModelPrice`` table staff keep in admin.

``cost_usd`` is exact (``Decimal``); ``annotate_costs`` writes each model output's
``cost_usd`` (a float, or null when the model has no price); ``sum_costs`` and
``add_costs`` make the step's cost and the execution's ``aggregate_tokens["cost_usd"]``.
Unknown prices are null, never 0, and a null poisons every sum it enters: a total that
leaves out a model would understate the bill.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from .models import ConfigSnapshot, ModelPrice
from .types import TokenUsage

MILLION = Decimal(1_000_000)
# Costs are kept to 1e-10 USD: below any provider's billing unit, and exact in a float.
QUANTUM = Decimal("1e-10")
# Offline providers that never bill: their calls cost 0, with or without a price row.
FREE_PROVIDERS = frozenset({"echo"})

Prices = dict[tuple[str, str], tuple[Decimal, Decimal]]


def _load_prices() -> Prices:
    return {
        (row.provider, row.model): (row.input_per_million_usd, row.output_per_million_usd)
        for row in ModelPrice.objects.all()
    }


_prices: ConfigSnapshot[Prices] = ConfigSnapshot(_load_prices)


def price_of(provider: str, model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per million tokens, or None when no row prices the model."""
    return _prices.get().get((provider, model))


def cost_usd(provider: str, model: str, tokens: Mapping[str, Any] | None) -> Decimal | None:
    """What ``tokens`` (``{input, output, total}``) of ``provider:model`` cost, in USD.

    None when the model has no price (not 0: an unknown cost is not a free call).
    """
    if provider in FREE_PROVIDERS:
        return Decimal(0)
    price = price_of(provider, model)
    if price is None:
        return None
    used = TokenUsage.from_raw(tokens)
    cost = (used.input * price[0] + used.output * price[1]) / MILLION
    return cost.quantize(QUANTUM)


def to_json(cost: Decimal | None) -> float | None:
    return None if cost is None else float(cost)


def annotate_costs(model_outputs: Iterable[dict[str, Any]]) -> None:
    """Set ``cost_usd`` (float, or None when the model has no price) on each model output."""
    for record in model_outputs:
        cost = cost_usd(str(record.get("provider") or ""), str(record.get("model") or ""), record.get("tokens"))
        record["cost_usd"] = to_json(cost)


def sum_costs(model_outputs: Iterable[dict[str, Any]]) -> Decimal | None:
    """The cost of a step's model outputs (annotated by ``annotate_costs``); None if any
    is unknown.

    A call that spent no tokens (it failed before the provider counted any) adds 0 even
    when its model has no price: nothing was billed for it.
    """
    total = Decimal(0)
    for record in model_outputs:
        cost = record.get("cost_usd")
        if cost is not None:
            total += Decimal(str(cost))
        elif TokenUsage.from_raw(record.get("tokens")).spent:
            return None
    return total


def add_costs(previous: Any, step_cost: Decimal | None) -> float | None:
    """``aggregate_tokens["cost_usd"]`` after a step: the previous total (absent = 0)
    plus ``step_cost``; null once any step's cost is unknown."""
    if previous is None or step_cost is None:
        return None
    return to_json((Decimal(str(previous)) + step_cost).quantize(QUANTUM))


def clear_cache() -> None:
    _prices.clear()


# --- loading a price list ------------------------------------------------------------------

PRICE_FIELDS = ("provider", "model", "input_per_million_usd", "output_per_million_usd")


def model_prices_load(*, entries: Any) -> tuple[int, int]:
    """Create or update one ``ModelPrice`` per entry; returns (created, updated).

    ``entries``: a list of ``{provider, model, input_per_million_usd,
    output_per_million_usd, currency_note?}`` (prices as strings or numbers). All or
    nothing: one invalid entry raises ``ValidationFailed`` naming every problem, and
    nothing is saved. Rows not in the list are left alone.
    """
    from django.core.exceptions import ValidationError
    from django.db import transaction

    from promptpilot.common.errors import ValidationFailed

    if not isinstance(entries, list):
        raise ValidationFailed('The price list must be a JSON list of {"provider", "model", ...} objects.')
    problems: dict[str, list[str]] = {}
    rows: list[ModelPrice] = []
    for index, entry in enumerate(entries):
        where = f"[{index}]"
        if not isinstance(entry, dict):
            problems[where] = ["must be an object."]
            continue
        missing = [name for name in PRICE_FIELDS if entry.get(name) in (None, "")]
        unknown = sorted(set(entry) - {*PRICE_FIELDS, "currency_note"})
        if missing:
            problems.setdefault(where, []).append(f"missing {', '.join(missing)}.")
        if unknown:
            problems.setdefault(where, []).append(f"unknown key(s) {', '.join(unknown)}.")
        if missing or unknown:
            continue
        row = ModelPrice.objects.filter(provider=entry["provider"], model=entry["model"]).first() or ModelPrice(
            provider=entry["provider"], model=entry["model"]
        )
        row.input_per_million_usd = str(entry["input_per_million_usd"])
        row.output_per_million_usd = str(entry["output_per_million_usd"])
        row.currency_note = str(entry.get("currency_note") or "")
        try:
            row.full_clean(validate_unique=False)
        except ValidationError as exc:
            problems[f"{where} {entry['provider']}:{entry['model']}"] = [
                f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            ]
            continue
        rows.append(row)
    keys = [(row.provider, row.model) for row in rows]
    if len(set(keys)) != len(keys):
        problems["list"] = ["lists the same provider and model more than once."]
    if problems:
        raise ValidationFailed("The price list has problems; nothing was saved.", extra={"errors": problems})
    created = sum(1 for row in rows if row.pk is None)
    with transaction.atomic():
        for row in rows:
            row.save()
    return created, len(rows) - created
