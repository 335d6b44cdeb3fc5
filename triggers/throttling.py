"""Per-trigger rate limits for API triggers (DRF throttles on the default cache).

The rate is the trigger's ``config.rate_limit`` ("60/min"), else
``PROMPTPILOT["TRIGGER_DEFAULT_RATE"]``. The window is counted in Django's default
cache: Redis when ``REDIS_URL`` is set (shared by every web process), per-process
memory otherwise. Like every DRF throttle the count is approximate under heavy
concurrency (read-modify-write on one cache key).
"""
from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from .models import TriggerKind
from .services.api_keys import parse_rate

DEFAULT_RATE = "60/min"


def trigger_rate(trigger) -> str:
    rate = (trigger.config or {}).get("rate_limit") or settings.PROMPTPILOT.get("TRIGGER_DEFAULT_RATE") or DEFAULT_RATE
    try:
        parse_rate(rate)
    except ValueError:
        return DEFAULT_RATE
    return rate


class TriggerRateThrottle(SimpleRateThrottle):
    """Keyed by trigger id. The view provides the trigger with ``throttle_trigger(request)``."""

    scope = "trigger"

    def __init__(self) -> None:  # the rate is per trigger, read in allow_request
        self.rate = None
        self.trigger = None

    def parse_rate(self, rate):
        return parse_rate(rate)

    def allow_request(self, request, view) -> bool:
        finder = getattr(view, "throttle_trigger", None)
        trigger = finder(request) if finder else None
        if trigger is None or trigger.type != TriggerKind.API:
            return True
        self.trigger = trigger
        self.rate = trigger_rate(trigger)
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": str(self.trigger.pk)} if self.trigger else None

    def wait(self) -> float:
        """Seconds until a request is allowed again: when the oldest counted one leaves the window."""
        if len(self.history) < self.num_requests:
            return 0.0
        oldest_counted = self.history[self.num_requests - 1]
        return max(1.0, oldest_counted + self.duration - self.now)
