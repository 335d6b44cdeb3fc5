"""Feature switches that staff toggle in admin (django-waffle), as the engine sees them.

The engine is framework-free: it is handed a ``features`` container and asks
``"workflow.multiModel" in features``. :func:`live_features` is that container for the
services and the orchestrator, reading waffle's ``Switch`` table when asked.

A waffle **Switch** (global on/off) rather than a Flag (per request/user): steps run on
workers, with no request to judge. Each look-up reads the table, not waffle's cache:
the embedded default keeps Django's cache per process, so a switch flipped in the web
process's admin would otherwise stay stale in the workers for minutes. A look-up
happens only when a definition is validated or a multi-model step runs, and once per
name per container.

Importable without Django (waffle is imported on first use).
"""
from __future__ import annotations

from collections.abc import Container

MULTI_MODEL = "workflow.multiModel"
ADMIN_PATH = "admin → Waffle → Switches"


def switch_is_on(name: str) -> bool:
    """Whether the waffle switch ``name`` is on; a missing one is ``WAFFLE_SWITCH_DEFAULT`` (off)."""
    from waffle import get_waffle_switch_model
    from waffle.utils import get_setting

    active = get_waffle_switch_model().objects.filter(name=name).values_list("active", flat=True).first()
    return bool(get_setting("SWITCH_DEFAULT", False)) if active is None else bool(active)


class LiveFeatures(Container[str]):
    """The switches that are on, read from the database the first time each is asked."""

    def __init__(self) -> None:
        self._seen: dict[str, bool] = {}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._seen:
            self._seen[name] = switch_is_on(name)
        return self._seen[name]

    def __repr__(self) -> str:
        return f"LiveFeatures(seen={self._seen!r})"


def live_features() -> LiveFeatures:
    """A fresh container: one per validation or step attempt, so a flip applies to the next one."""
    return LiveFeatures()
