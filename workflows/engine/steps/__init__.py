"""Step types. Importing this package registers every built-in type."""
from . import approval, condition, delay, http, map_step, prompt, subworkflow, transform  # noqa: F401  (each registers itself)
from .registry import get_handler, register, registered_types

__all__ = ["get_handler", "register", "registered_types"]
