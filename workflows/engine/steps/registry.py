"""Step types by name. A new type is one module that calls ``register`` plus its tests."""
from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import StepHandler

_handlers: dict[str, StepHandler] = {}


def register(step_type: str) -> Callable[[type], type]:
    """Class decorator: ``@register("PROMPT") class PromptStep: ...``. Handlers are stateless,
    so one instance serves every run."""

    def decorator(handler_class: type) -> type:
        handler_class.step_type = step_type
        _handlers[step_type] = handler_class()
        return handler_class

    return decorator


def get_handler(step_type: str) -> StepHandler:
    try:
        return _handlers[step_type]
    except KeyError:
        known = ", ".join(registered_types()) or "none"
        raise ConfigError(f'Unknown step type "{step_type}". Known step types: {known}.') from None


def registered_types() -> list[str]:
    return sorted(_handlers)
