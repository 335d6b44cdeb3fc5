"""providers/pricing.py, the ModelPrice table, load_prices, and the costs the
orchestrator records on model outputs and executions."""
from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from providers import pricing
from providers.models import ModelPrice
from providers.registry import register
from providers.types import ModelRequest, ModelResponse
from workflows.models import StepExecutionStatus, WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.services.orchestration import execution_admit, step_attempt_run
from workflows.tests.factories import make_workflow


@pytest.fixture(autouse=True)
def fresh_prices() -> Iterator[None]:
    pricing.clear_cache()
    yield
    pricing.clear_cache()


def _price(provider: str = "openai", model: str = "gpt-test", inp: str = "2.50", out: str = "10.00") -> ModelPrice:
    return ModelPrice.objects.create(
        provider=provider, model=model, input_per_million_usd=Decimal(inp), output_per_million_usd=Decimal(out)
    )


# --- cost_usd --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cost_is_tokens_times_price_per_million_exactly():
    _price()
    cost = pricing.cost_usd("openai", "gpt-test", {"input": 1000, "output": 500, "total": 1500})
    assert cost == Decimal("0.0075")  # 1000 × 2.50 / 1e6 + 500 × 10.00 / 1e6
    assert pricing.cost_usd("openai", "gpt-test", {"input": 1, "output": 0, "total": 1}) == Decimal("0.0000025")


@pytest.mark.django_db
def test_an_unknown_model_costs_null_not_zero():
    _price()
    assert pricing.cost_usd("openai", "gpt-unpriced", {"input": 10, "output": 10, "total": 20}) is None
    assert pricing.cost_usd("anthropic", "gpt-test", {"input": 10, "output": 10, "total": 20}) is None


@pytest.mark.django_db
def test_the_offline_echo_provider_is_free():
    assert pricing.cost_usd("echo", "echo", {"input": 10, "output": 10, "total": 20}) == 0


@pytest.mark.django_db
def test_prices_are_cached_and_a_save_in_this_process_refreshes_them(django_assert_num_queries):
    row = _price()
    pricing.cost_usd("openai", "gpt-test", {"input": 1})
    with django_assert_num_queries(0):
        for _ in range(50):
            pricing.cost_usd("openai", "gpt-test", {"input": 1})
    row.input_per_million_usd = Decimal("5")
    row.save()
    assert pricing.cost_usd("openai", "gpt-test", {"input": 1_000_000}) == Decimal("5")


@pytest.mark.django_db
def test_changes_made_elsewhere_apply_after_the_cache_lifetime(settings):
    _price()
    pricing.cost_usd("openai", "gpt-test", {"input": 1})
    ModelPrice.objects.filter(model="gpt-test").update(input_per_million_usd=Decimal("7"))  # no signal, like another process
    assert pricing.cost_usd("openai", "gpt-test", {"input": 1_000_000}) == Decimal("2.5")
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "PROVIDER_CONFIG_CACHE_SECONDS": 0}
    assert pricing.cost_usd("openai", "gpt-test", {"input": 1_000_000}) == Decimal("7")


# --- sums ------------------------------------------------------------------------------------


def _output(provider: str, model: str, inp: int, out: int, status: str = "ok") -> dict:
    return {"provider": provider, "model": model, "status": status,
            "tokens": {"input": inp, "output": out, "total": inp + out}}


@pytest.mark.django_db
def test_annotate_sets_cost_on_each_model_output_and_sum_adds_them():
    _price()
    outputs = [_output("openai", "gpt-test", 1000, 500), _output("echo", "echo", 3, 3)]
    pricing.annotate_costs(outputs)
    assert [o["cost_usd"] for o in outputs] == [0.0075, 0.0]
    assert pricing.sum_costs(outputs) == Decimal("0.0075")


@pytest.mark.django_db
def test_one_unknown_cost_makes_the_sum_unknown():
    _price()
    outputs = [_output("openai", "gpt-test", 1000, 500), _output("openai", "gpt-unpriced", 10, 10)]
    pricing.annotate_costs(outputs)
    assert outputs[1]["cost_usd"] is None
    assert pricing.sum_costs(outputs) is None
    assert pricing.add_costs(0.5, None) is None
    assert pricing.add_costs(None, Decimal("1")) is None  # once unknown, the total stays unknown


@pytest.mark.django_db
def test_a_failed_call_that_spent_no_tokens_does_not_make_the_sum_unknown():
    _price()
    outputs = [_output("openai", "gpt-unpriced", 0, 0, status="error"), _output("openai", "gpt-test", 1000, 500)]
    pricing.annotate_costs(outputs)
    assert outputs[0]["cost_usd"] is None  # still no price for it
    assert pricing.sum_costs(outputs) == Decimal("0.0075")


def test_add_costs_starts_from_zero_and_stays_exact():
    total: float | None = 0
    for _ in range(10):
        total = pricing.add_costs(total, Decimal("0.1"))
    assert total == 1.0  # not 0.9999999999999999


# --- recorded by the orchestrator ---------------------------------------------------------------


class PricedAdapter:
    name = "priced-test"

    def complete(self, request: ModelRequest) -> ModelResponse:
        return ModelResponse(content=request.prompt, tokens={"input": 1000, "output": 500, "total": 1500},
                             latency_ms=1, finish_reason="stop")


register(PricedAdapter())


@pytest.fixture
def in_process(monkeypatch):
    # The worker closes stale connections between attempts; inside the test's transaction
    # that would close the test's own connection.
    monkeypatch.setattr("workflows.services.orchestration.close_old_connections", lambda: None)


def _run_in_process(workflow, user):
    """Admit the run and execute each step attempt here, as a worker would (broker sends
    wait for a commit that never comes, so nothing is queued)."""
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    execution_admit(execution_id=execution.id)
    for _ in range(10):
        pending = WorkflowStepExecution.objects.filter(execution=execution, status=StepExecutionStatus.PENDING).first()
        if pending is None:
            break
        step_attempt_run(step_execution_id=pending.id, attempt=pending.attempt)
    execution.refresh_from_db()
    return execution


def _prompt_step(name: str, model: str) -> dict:
    return {"name": name, "type": "PROMPT",
            "config": {"template": f"{name} please", "model": {"provider": "priced-test", "model": model}}}


@pytest.mark.django_db
def test_model_outputs_and_the_execution_carry_the_cost(user, in_process):
    _price("priced-test", "m-1")
    workflow = make_workflow(user, steps=[
        _prompt_step("first", "m-1"),
        {"name": "shape", "type": "TRANSFORM", "config": {"template": "{{ steps.first.output }}"}},
        _prompt_step("second", "m-1"),
    ])
    execution = _run_in_process(workflow, user)
    assert execution.status == "COMPLETED"
    first = WorkflowStepExecution.objects.get(execution=execution, step_name="first")
    assert first.model_outputs[0]["cost_usd"] == 0.0075
    assert first.tokens == {"input": 1000, "output": 500, "total": 1500}  # tokens unchanged
    assert execution.aggregate_tokens == {"input": 2000, "output": 1000, "total": 3000, "cost_usd": 0.015}


@pytest.mark.django_db
def test_an_unpriced_model_makes_the_execution_cost_null(user, in_process):
    _price("priced-test", "m-1")
    workflow = make_workflow(user, steps=[_prompt_step("first", "m-1"), _prompt_step("second", "m-unpriced")])
    execution = _run_in_process(workflow, user)
    assert execution.status == "COMPLETED"
    assert WorkflowStepExecution.objects.get(execution=execution, step_name="second").model_outputs[0]["cost_usd"] is None
    assert execution.aggregate_tokens["cost_usd"] is None
    assert execution.aggregate_tokens["total"] == 3000


# --- load_prices --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_load_prices_creates_then_updates_rows(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps([
        {"provider": "openai", "model": "gpt-test", "input_per_million_usd": "0.15", "output_per_million_usd": 0.6},
        {"provider": "anthropic", "model": "claude-test", "input_per_million_usd": "3",
         "output_per_million_usd": "15", "currency_note": "list price"},
    ]))
    call_command("load_prices", str(path))
    assert ModelPrice.objects.count() == 2
    assert ModelPrice.objects.get(model="gpt-test").output_per_million_usd == Decimal("0.6")
    path.write_text(json.dumps([
        {"provider": "openai", "model": "gpt-test", "input_per_million_usd": "0.2", "output_per_million_usd": "0.8"},
    ]))
    call_command("load_prices", str(path))
    assert ModelPrice.objects.count() == 2  # rows the file leaves out are kept
    assert ModelPrice.objects.get(model="gpt-test").input_per_million_usd == Decimal("0.2")


@pytest.mark.django_db
def test_load_prices_saves_nothing_when_an_entry_is_invalid(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps([
        {"provider": "openai", "model": "ok", "input_per_million_usd": "1", "output_per_million_usd": "2"},
        {"provider": "openai", "model": "bad", "input_per_million_usd": "-1", "output_per_million_usd": "x"},
        {"provider": "openai", "input_per_million_usd": "1", "output_per_million_usd": "2", "colour": "red"},
    ]))
    with pytest.raises(CommandError) as caught:
        call_command("load_prices", str(path))
    message = str(caught.value)
    assert "openai:bad" in message and "missing model" in message and "colour" in message
    assert ModelPrice.objects.count() == 0


# --- admin ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prices_are_editable_in_the_admin_list(admin_client):
    row = _price()
    page = admin_client.get("/admin/providers/modelprice/")
    assert page.status_code == 200 and b"gpt-test" in page.content
    response = admin_client.post("/admin/providers/modelprice/", {
        "form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1", "form-MIN_NUM_FORMS": "0", "form-MAX_NUM_FORMS": "1000",
        "form-0-id": str(row.pk), "form-0-input_per_million_usd": "3.00", "form-0-output_per_million_usd": "12.00",
        "form-0-currency_note": "list price", "_save": "Save",
    })
    assert response.status_code == 302, response.content[:2000]
    row.refresh_from_db()
    assert (row.input_per_million_usd, row.output_per_million_usd) == (Decimal("3"), Decimal("12"))
