"""Several models for one prompt: ``parallel``, ``fallback`` or ``race`` (DESIGN §4).

``dispatch`` is synchronous for its caller (the PROMPT step) and concurrent inside: the
model calls run as tasks on one event loop per process (a daemon thread, started on
first use), through each adapter's ``acomplete``. That gives

- real concurrency without a thread per call (parallel, race);
- real cancellation: cancelling a task aborts its HTTP request (the SDK closes the
  connection), so a race's losers stop generating and the provider sees them go;
- pooled connections across steps: async SDK clients are bound to the loop that made
  them, and there is one loop per process (``providers/clients.py``).

Adapters (and their rate-limit wrappers) are resolved in the caller's thread, before any
concurrent work starts: resolving may read the database (connections, limits), and the
loop's threads must never open database connections. An adapter without ``acomplete``
(a custom one) runs in a worker thread; a race can ignore it but not abort it.

Budget: one call per model per dispatch, never more (no retries here). The step's
``retry_config`` retries the whole dispatch, so a step makes at most
``(max_retries + 1) × len(models)`` calls.

Framework-free: imported by the engine.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .clients import worker_concurrency
from .errors import InvalidCredentials, MissingCredentials, ProviderError, ProviderTimeout
from .types import ModelRequest, ModelResponse, ProviderAdapter, TokenUsage

logger = logging.getLogger(__name__)

PARALLEL, FALLBACK, RACE = "parallel", "fallback", "race"
MODES = (PARALLEL, FALLBACK, RACE)
DEFAULT_MODE = PARALLEL
MAX_MODELS = 8
ALL_FAILED = "AllModelsFailed"
CANCELLED = "Cancelled"
INTERNAL_ERROR = "InternalError"
# A call still running this long after its own timeout (plus as long again for a
# rate-limit slot) is given up on: the SDK timeouts apply per phase of the exchange,
# and a server dripping bytes could otherwise hold a step for ever.
GUARD_GRACE_SECONDS = 5.0

T = TypeVar("T")


def model_key(model: dict[str, Any]) -> str:
    return f"{model['provider']}:{model['model']}"


def output_keys(models: list[dict[str, Any]]) -> list[str]:
    """``"provider:model"`` per model; a pair listed again gets ``#2``, ``#3``...
    (the same model at two temperatures, say)."""
    seen: dict[str, int] = {}
    keys = []
    for model in models:
        key = model_key(model)
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


@dataclass
class DispatchResult:
    output: Any = None  # the chosen model's output (``accept``ed content), None when all failed
    outputs: dict[str, Any] = field(default_factory=dict)  # "provider:model" -> output, None if it failed
    model_outputs: list[dict[str, Any]] = field(default_factory=list)  # DESIGN §4 shape, one per call made
    tokens: dict[str, int] = field(default_factory=lambda: TokenUsage().as_dict())  # every call made, added up
    warnings: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None  # {type, message, step: None, details: {mode, errors}} when all failed
    retryable: bool = False
    retry_after: float | None = None
    chosen: str | None = None  # output key of the model whose answer is ``output``

    @property
    def ok(self) -> bool:
        return self.error is None


# --- one model call --------------------------------------------------------------------


@dataclass
class _Call:
    key: str
    model: dict[str, Any]
    request: ModelRequest
    adapter: ProviderAdapter | None
    state: str = "not-called"  # not-called | running | ok | error | cancelled
    response: ModelResponse | None = None
    output: Any = None
    error: BaseException | None = None
    latency_ms: int = 0
    cancelled_by: str | None = None

    def record(self) -> dict[str, Any]:
        """The model output (DESIGN §4): ``status`` "ok" or "error"; a race's cancelled
        losers are "error" with error type ``Cancelled`` (aborted, not failed)."""
        response = self.response
        error: dict[str, Any] | None = None
        if self.state == "cancelled":
            message = (
                f"Not needed: {self.cancelled_by} answered first; the request was aborted."
                if self.cancelled_by else "Aborted: the step was interrupted."
            )
            error = {"type": CANCELLED, "message": message, "step": None,
                     "details": {"provider": self.model["provider"]}}
        elif self.error is not None:
            error = error_record(self.error)
        return {
            "provider": self.model["provider"],
            "model": self.model["model"],
            "status": "ok" if self.state == "ok" else "error",
            "content": response.content if response is not None else None,
            "tokens": TokenUsage.from_raw(response.tokens if response is not None else None).as_dict(),
            "latency_ms": response.latency_ms if response is not None else self.latency_ms,
            "retries": response.retries if response is not None else 0,
            "error": error,
            "warnings": list(response.warnings) if response is not None else [],
            "finish_reason": response.finish_reason if response is not None else None,
            "request_id": (response.request_id if response is not None else None)
            or (getattr(self.error, "details", None) or {}).get("request_id"),
        }


def error_record(exc: BaseException) -> dict[str, Any]:
    """``{type, message, step, details}`` for any error a model call can meet (the
    engine fills in ``step``)."""
    details = dict(getattr(exc, "details", None) or {})
    if isinstance(exc, ProviderError):
        if exc.status_code is not None:
            details.setdefault("status_code", exc.status_code)
        if exc.retry_after is not None:
            details.setdefault("retry_after", exc.retry_after)
    kind = getattr(exc, "type", None)
    if not isinstance(kind, str):
        kind = INTERNAL_ERROR
    message = getattr(exc, "message", None) or (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return {"type": kind, "message": str(message), "step": None, "details": details}


async def _complete(adapter: ProviderAdapter, request: ModelRequest) -> ModelResponse:
    acomplete = getattr(adapter, "acomplete", None)
    if acomplete is not None:
        return await acomplete(request)
    # A sync-only adapter: a thread makes the call; cancelling stops waiting for it, no more.
    return await asyncio.to_thread(adapter.complete, request)


async def _attempt(call: _Call, accept: Callable[[str], Any] | None) -> None:
    """Make ``call``'s one model call and record how it went. Raises only CancelledError."""
    started = time.monotonic()
    call.state = "running"
    try:
        if call.adapter is None:  # resolving failed; call.error says why
            raise call.error or ProviderError(f"{call.key}: no adapter.")
        guard = 2 * call.request.timeout_seconds + GUARD_GRACE_SECONDS
        try:
            response = await asyncio.wait_for(_complete(call.adapter, call.request), guard)
        except TimeoutError:
            raise ProviderTimeout(
                f"{call.key} did not finish within {guard:g} s (twice the step's timeout, plus a grace period).",
                details={"provider": call.model["provider"], "timeout_seconds": call.request.timeout_seconds},
            ) from None
    except Exception as exc:  # provider errors and adapter bugs alike: this model failed, others go on
        if not isinstance(exc, ProviderError):
            logger.exception("dispatch.adapter_error", extra={"provider": call.model["provider"], "model": call.model["model"]})
        call.state, call.error = "error", exc
        call.latency_ms = int((time.monotonic() - started) * 1000)
        return
    call.response = response
    if accept is not None:
        try:
            call.output = accept(response.content)
        except Exception as exc:  # e.g. InvalidOutput: answered, but not in the step's output_format
            call.state, call.error = "error", exc
            return
    else:
        call.output = response.content
    call.state = "ok"


# --- modes -----------------------------------------------------------------------------


async def _parallel(calls: list[_Call], accept: Callable[[str], Any] | None) -> _Call | None:
    await asyncio.gather(*(_attempt(call, accept) for call in calls))
    return next((call for call in calls if call.state == "ok"), None)  # first in list order


async def _fallback(calls: list[_Call], accept: Callable[[str], Any] | None) -> _Call | None:
    for call in calls:
        await _attempt(call, accept)
        if call.state == "ok":
            return call
    return None


async def _race(calls: list[_Call], accept: Callable[[str], Any] | None) -> _Call | None:
    tasks = {asyncio.ensure_future(_attempt(call, accept)): call for call in calls}
    pending: set[asyncio.Future[None]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winners = sorted((tasks[task] for task in done if tasks[task].state == "ok"), key=calls.index)
            if winners:
                winner = winners[0]
                for task in pending:
                    tasks[task].cancelled_by = winner.key
                return winner
        return None
    finally:
        # The winner is known (or this dispatch itself is being cancelled): abort the
        # rest, and wait until they are gone so their connections are closed when
        # dispatch returns.
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in pending:
            call = tasks[task]
            if call.state == "running":
                call.state = "cancelled"


_MODES = {PARALLEL: _parallel, FALLBACK: _fallback, RACE: _race}


# --- the entry point -------------------------------------------------------------------


def dispatch(
    models: list[dict[str, Any]],
    mode: str,
    *,
    prompt: str,
    system: str | None,
    timeout_seconds: float,
    resolver: Callable[[str], ProviderAdapter],
    accept: Callable[[str], Any] | None = None,
    output_schema: dict[str, Any] | None = None,
) -> DispatchResult:
    """Call ``models`` (each ``{provider, model, ...params}``) per ``mode``; never raises
    for a model's failure.

    ``accept(content)`` turns an answer into the step's output and raises to reject it
    (e.g. JSON that does not parse): a rejected answer counts as that model failing, so
    parallel picks the next, fallback moves on and a race keeps waiting.
    ``output_schema`` goes on every request, for adapters that ask for structured output.
    """
    if mode not in _MODES:
        raise ValueError(f'Unknown mode "{mode}"; use one of {", ".join(MODES)}.')
    if not models:
        raise ValueError("dispatch needs at least one model.")
    calls = []
    for key, model in zip(output_keys(models), models, strict=True):
        params = {name: value for name, value in model.items() if name not in ("provider", "model")}
        request = ModelRequest(
            provider=model["provider"], model=model["model"], prompt=prompt, system=system,
            params=params, timeout_seconds=float(timeout_seconds), output_schema=output_schema,
        )
        call = _Call(key=key, model=model, request=request, adapter=None)
        try:
            # NOTE: here, in the caller's thread, before any concurrent work (see the module doc).
            call.adapter = resolver(model["provider"])
        except ProviderError as exc:  # unknown provider, undecryptable connection key...
            call.error = exc
        calls.append(call)
    started = time.monotonic()
    chosen = run_coroutine(_MODES[mode](calls, accept))
    logger.info(
        "dispatch.finished",
        extra={"mode": mode, "models": len(calls), "chosen": chosen.key if chosen else None,
               "latency_ms": int((time.monotonic() - started) * 1000)},
    )
    return _result(calls, mode, chosen)


def _result(calls: list[_Call], mode: str, chosen: _Call | None) -> DispatchResult:
    made = [call for call in calls if call.state in ("ok", "error", "cancelled")]
    model_outputs = [call.record() for call in made]
    result = DispatchResult(
        output=chosen.output if chosen else None,
        outputs={call.key: call.output if call.state == "ok" else None for call in calls},
        model_outputs=model_outputs,
        tokens=TokenUsage.total_of(record["tokens"] for record in model_outputs).as_dict(),
        chosen=chosen.key if chosen else None,
    )
    for call in made:
        if call.state == "error":
            result.warnings.append(_failure_warning(call))
        if call.response is not None:
            result.warnings.extend(f"{call.key}: {warning}" for warning in call.response.warnings)
    if chosen is None:
        failed = [call for call in made if call.state == "error"]
        result.error = _all_failed(failed, mode)
        retryable = [call.error for call in failed if getattr(call.error, "retryable", False)]
        result.retryable = bool(retryable)
        waits = [float(e.retry_after) for e in retryable if getattr(e, "retry_after", None) is not None]
        # The next attempt calls every model again: wait as long as the slowest asks.
        result.retry_after = max(waits) if waits else None
    return result


def _failure_warning(call: _Call) -> str:
    record = error_record(call.error) if call.error is not None else {"type": "?", "message": ""}
    if isinstance(call.error, (InvalidCredentials, MissingCredentials)):
        return (
            f"{call.key} failed: authentication problem ({record['type']}), so it was skipped: {record['message']}"
        )
    return f"{call.key} failed ({record['type']}): {record['message']}"


def _all_failed(failed: list[_Call], mode: str) -> dict[str, Any]:
    errors = []
    for call in failed:
        record = error_record(call.error) if call.error is not None else {"type": INTERNAL_ERROR, "message": ""}
        errors.append({"provider": call.model["provider"], "model": call.model["model"], "key": call.key,
                       "type": record["type"], "message": record["message"], "details": record.get("details", {})})
    types = {entry["type"] for entry in errors}
    # One shared type keeps its meaning for the retry policy (all MissingCredentials: never
    # retried; all InvalidOutput: retried if retry_on says so); a mix is AllModelsFailed.
    kind = types.pop() if len(types) == 1 else ALL_FAILED
    summary = "; ".join(f"{entry['key']}: {entry['type']}: {entry['message']}" for entry in errors)
    return {
        "type": kind,
        "message": f"All {len(errors)} models failed ({mode} mode). {summary}",
        "step": None,
        "details": {"mode": mode, "errors": errors},
    }


# --- the process's dispatch loop -------------------------------------------------------


# Threads for what cannot be awaited: sync-only adapters and rate-limit waits. Python's
# default (CPUs + 4) would queue a busy worker's waits behind each other.
# At least one per step attempt the worker runs at once (threads start only when needed).
MIN_EXECUTOR_THREADS = 32


class _LoopThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(
            ThreadPoolExecutor(max_workers=max(MIN_EXECUTOR_THREADS, 2 * worker_concurrency()),
                               thread_name_prefix="provider-dispatch")
        )
        self.thread = threading.Thread(target=self._run, name="provider-dispatch-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


_runner: _LoopThread | None = None
_runner_lock = threading.Lock()


def _loop_thread() -> _LoopThread:
    global _runner
    runner = _runner
    # A forked child (Celery prefork, gunicorn) inherits the loop object but not its thread.
    if runner is None or runner.pid != os.getpid() or not runner.thread.is_alive():
        with _runner_lock:
            runner = _runner
            if runner is None or runner.pid != os.getpid() or not runner.thread.is_alive():
                runner = _runner = _LoopThread()
    return runner


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the dispatch loop and wait for it. If the waiting thread is
    interrupted (a Celery time limit, Ctrl-C), the coroutine is cancelled, which aborts
    its HTTP calls."""
    runner = _loop_thread()
    if threading.current_thread() is runner.thread:
        coroutine.close()
        raise RuntimeError("dispatch() is synchronous: do not call it from the dispatch loop itself.")
    future = asyncio.run_coroutine_threadsafe(coroutine, runner.loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
