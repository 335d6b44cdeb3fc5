"""Throttling of failed credentials: wrong passwords and wrong API keys.

DRF throttles count requests; guessing needs failures counted, and checked *before* the
credentials are, so that a throttled guesser learns nothing (a right guess is refused
too). Each failure is counted twice: for its target (the account's username, the
trigger's id) and for the client address (DRF's ``get_ident``, which honours
``NUM_PROXIES`` for X-Forwarded-For). Past either limit the answer is 429 with
Retry-After. The windows live in Django's default cache (Redis when configured), with
DRF's sliding-window arithmetic (``SimpleRateThrottle``).
"""
from __future__ import annotations

import hashlib

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class _FailureWindow(SimpleRateThrottle):
    """One sliding window of failures: ``scope`` + ``ident``."""

    def __init__(self, scope: str, rate: str) -> None:  # no view: scope and rate are given
        self.scope = scope
        self.rate = rate
        self.num_requests, self.duration = self.parse_rate(rate)

    def _load(self, ident: str) -> None:
        # Hashed: a username may hold characters no cache key should (and any length).
        digest = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        self.key = self.cache_format % {"scope": self.scope, "ident": digest}
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()

    def wait_for(self, ident: str) -> float | None:
        """Seconds until ``ident`` may try again, or None if it may now."""
        self._load(ident)
        if len(self.history) < self.num_requests:
            return None
        return max(1.0, self.history[self.num_requests - 1] + self.duration - self.now)

    def count(self, ident: str) -> None:
        self._load(ident)
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


def _windows(kind: str) -> tuple[_FailureWindow, _FailureWindow]:
    conf = settings.PROMPTPILOT
    return (_FailureWindow(f"{kind}_failures", conf["AUTH_FAILURE_RATE_PER_TARGET"]),
            _FailureWindow("auth_failures_client", conf["AUTH_FAILURE_RATE_PER_CLIENT"]))


def _ident(request: Request) -> str:
    # BaseThrottle.get_ident needs no throttle state; an instance without __init__ is enough.
    # None when the server gave no REMOTE_ADDR (some WSGI test clients): one shared bucket.
    return SimpleRateThrottle.get_ident(object.__new__(SimpleRateThrottle), request) or "unknown"


def credential_failures_check(request: Request, *, kind: str, target: str, what: str) -> None:
    """Raise Throttled (429, Retry-After) when ``target`` or the client failed too often.
    ``kind`` names the credential ("login", "api_key"); ``what`` the target for the message."""
    per_target, per_client = _windows(kind)
    waits = [w for w in (per_target.wait_for(target.lower()), per_client.wait_for(_ident(request))) if w]
    if waits:
        wait = max(waits)
        raise Throttled(wait, detail=(
            f"Too many failed attempts for {what} or from your address; retry after the number of seconds "
            f"in the Retry-After header ({int(wait + 0.999)} s)."
        ))


def credential_failure_record(request: Request, *, kind: str, target: str) -> None:
    per_target, per_client = _windows(kind)
    per_target.count(target.lower())
    per_client.count(_ident(request))
