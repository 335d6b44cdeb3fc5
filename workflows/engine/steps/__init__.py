"""Step types. Importing this package registers every built-in type."""
from . import approval, condition, delay, http, prompt, subworkflow, transform  # noqa: F401  (each registers itself)
from .registry import get_handler, register, registered_types

__all__ = ["get_handler", "register", "registered_types"]
