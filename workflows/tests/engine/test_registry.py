"""workflows/engine/steps/registry.py: every step type is one registration away."""
from __future__ import annotations

import pytest

from workflows.engine.errors import ConfigError
from workflows.engine.steps import get_handler, registered_types
from workflows.engine.steps.approval import ApprovalStep
from workflows.engine.steps.condition import ConditionStep
from workflows.engine.steps.delay import DelayStep
from workflows.engine.steps.http import HttpStep
from workflows.engine.steps.map_step import MapStep
from workflows.engine.steps.prompt import PromptStep
from workflows.engine.steps.registry import _handlers, register
from workflows.engine.steps.subworkflow import WorkflowStep
from workflows.engine.steps.transform import TransformStep


@pytest.mark.parametrize(
    ("step_type", "handler_class"),
    [("PROMPT", PromptStep), ("CONDITION", ConditionStep), ("TRANSFORM", TransformStep), ("HTTP", HttpStep),
     ("APPROVAL", ApprovalStep), ("DELAY", DelayStep), ("WORKFLOW", WorkflowStep), ("MAP", MapStep)],
)
def test_each_builtin_step_type_is_registered(step_type: str, handler_class: type) -> None:
    assert isinstance(get_handler(step_type), handler_class)


def test_registered_types_match_the_documented_step_types() -> None:
    assert registered_types() == ["APPROVAL", "CONDITION", "DELAY", "HTTP", "MAP", "PROMPT", "TRANSFORM", "WORKFLOW"]


def test_unknown_step_type_names_the_known_ones() -> None:
    with pytest.raises(ConfigError,
                       match="Known step types: APPROVAL, CONDITION, DELAY, HTTP, MAP, PROMPT, TRANSFORM, WORKFLOW"):
        get_handler("LOOP")


def test_a_new_step_type_is_one_registration() -> None:
    @register("NOOP")
    class NoopStep:
        pass

    try:
        assert isinstance(get_handler("NOOP"), NoopStep)
        assert "NOOP" in registered_types()
    finally:
        _handlers.pop("NOOP")
