"""Template context shared by every page."""
from __future__ import annotations

from django.utils.functional import SimpleLazyObject


def attention(request) -> dict:
    """``attention_count`` for the nav link: one query, and only when a template reads it."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def count() -> int:
        from .attention_selectors import attention_count
        return attention_count(user)

    return {"attention_count": SimpleLazyObject(count)}
