#!/usr/bin/env python
"""Run PromptPilot's embedded default in the foreground: web, worker and beat.

    python scripts/run_embedded.py [--host 127.0.0.1] [--port 8000] [--skip-setup]

First it prepares the database and static files (``migrate``, ``collectstatic``,
``seed_demo``), then it supervises three processes and prefixes their output
(``web    | ...``). A process that dies is started again, alone, after a pause that
doubles from 1 s up to 30 s while it keeps dying (back to 1 s once it has run for a
minute); the launcher says which one died, its exit code and when it comes back.
Only Ctrl-C or SIGTERM to the launcher stops all three: SIGTERM first, SIGKILL after a
grace period. With no environment set, Django's settings use SQLite in ``var/`` and
kombu's filesystem broker under ``var/broker/``; set DATABASE_URL / REDIS_URL to run
the same processes against PostgreSQL and Redis.

This file is a launcher, not part of the Django app, so it reads its own two knobs
from the environment: PROMPTPILOT_PORT and PROMPTPILOT_HOST (the flags win).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BASE_DIR = Path(__file__).resolve().parent.parent
GRACE_SECONDS = 10.0
POLL_SECONDS = 0.2
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
RESTART_STABLE_SECONDS = 60.0  # a child that ran this long starts again after the first delay

_COLOURS = {"web": "36", "worker": "35", "beat": "33", "setup": "34", "run": "32"}


class Output:
    """Serialises lines from several processes onto one stream, each with its prefix."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()
        self.colour = hasattr(self.stream, "isatty") and self.stream.isatty() and not os.environ.get("NO_COLOR")

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<6}|"
        if self.colour:
            prefix = f"\033[{_COLOURS.get(name, '0')}m{prefix}\033[0m"
        with self.lock:
            try:
                self.stream.write(f"{prefix} {text.rstrip()}\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):  # the terminal went away; keep supervising
                pass


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    stop_sent_at: float | None = field(default=None)
    started_at: float = 0.0
    restart_at: float | None = None  # set while a dead child waits for its restart
    next_delay: float = 0.0
    restarts: int = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _load_libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True)
    except Exception:  # not Linux: a supervisor killed with SIGKILL may leave children behind
        return None


# NOTE: loaded here, not in the child: a restart forks while relay threads run, and a
# child between fork and exec must not import (another thread may hold the import lock).
_LIBC = _load_libc() if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor vanishes (Linux only)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class StopRequest:
    """Set by SIGINT / SIGTERM; remembers which signal asked."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self.event.is_set():
            self.reason = signal.Signals(signum).name
            self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


class Supervisor:
    """Start processes, relay their output, restart the ones that die, stop them all together."""

    def __init__(
        self,
        commands: Sequence[tuple[str, list[str]]],
        *,
        output: Output,
        env: dict[str, str] | None = None,
        cwd: Path = BASE_DIR,
        grace_seconds: float = GRACE_SECONDS,
        stop: StopRequest | None = None,
        restart_first_delay: float = RESTART_FIRST_DELAY,
        restart_max_delay: float = RESTART_MAX_DELAY,
        restart_stable_seconds: float = RESTART_STABLE_SECONDS,
    ) -> None:
        self.children = [Child(name, list(argv)) for name, argv in commands]
        self.output = output
        self.env = env
        self.cwd = cwd
        self.grace_seconds = grace_seconds
        self.stop = stop or StopRequest()
        self.restart_first_delay = restart_first_delay
        self.restart_max_delay = restart_max_delay
        self.restart_stable_seconds = restart_stable_seconds

    # -- processes

    def _spawn(self, child: Child) -> None:
        # NOTE: a new session per child keeps the terminal's Ctrl-C away from the
        # children, so the supervisor alone decides the shutdown order, and lets it
        # signal a whole process tree (Celery's pool, gunicorn's workers) at once.
        child.process = subprocess.Popen(
            child.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=_die_with_parent if _LIBC is not None else None,
        )
        child.started_at = time.monotonic()

    def _relay(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        for line in child.process.stdout:
            self.output.line(child.name, line)

    def _start_relay(self, child: Child) -> None:
        child.reader = threading.Thread(target=self._relay, args=(child,), name=f"relay-{child.name}", daemon=True)
        child.reader.start()

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
            child.next_delay = self.restart_first_delay
        for child in self.children:
            self._start_relay(child)
            self.output.line("run", f"started {child.name} (pid {child.pid}): {' '.join(child.argv)}")

    def _on_exit(self, child: Child) -> None:
        """A child died on its own: plan its restart, with the delay doubling while it keeps dying."""
        code = child.process.returncode if child.process else None
        ran = time.monotonic() - child.started_at
        if ran >= self.restart_stable_seconds:
            child.next_delay = self.restart_first_delay
        delay = child.next_delay
        child.next_delay = min(delay * 2, self.restart_max_delay)
        child.restart_at = time.monotonic() + delay
        # Its own children (gunicorn's workers, a pool) must not hold the port or the queue.
        self._signal(child, signal.SIGKILL, group=True)
        if child.reader is not None:
            child.reader.join(timeout=2)
        when = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
        self.output.line(
            "run",
            f"{child.name} (pid {child.pid}) exited with code {code} after {ran:.1f} s; "
            f"restarting it in {delay:g} s (at {when})",
        )

    def _restart(self, child: Child) -> None:
        child.restart_at = None
        child.restarts += 1
        self._spawn(child)
        self._start_relay(child)
        self.output.line("run", f"restarted {child.name} (pid {child.pid}, restart {child.restarts})")

    def supervise_once(self) -> None:
        """One pass: notice children that died, restart the ones whose pause is over."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is None and not child.alive():
                self._on_exit(child)
            elif child.restart_at is not None and now >= child.restart_at and not self.stop.is_set():
                self._restart(child)

    def wait(self, on_tick: Callable[[], None] | None = None) -> int:
        """Supervise until a stop is requested; stop everything; return 0."""
        while not self.stop.is_set():
            self.supervise_once()
            if on_tick:
                on_tick()
            self.stop.event.wait(POLL_SECONDS)
        self.output.line("run", f"{self.stop.reason or 'stop'} received; stopping web, worker and beat")
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        """SIGTERM to every child, SIGKILL to the process groups that outlive the grace period."""
        for child in self.children:
            if child.alive():
                self._signal(child, signal.SIGTERM, group=False)
                child.stop_sent_at = time.monotonic()
        deadline = time.monotonic() + self.grace_seconds
        while time.monotonic() < deadline and any(c.alive() for c in self.children):
            time.sleep(POLL_SECONDS)
        for child in self.children:
            if child.alive():
                self.output.line("run", f"{child.name} still running after {self.grace_seconds:g} s; killing it")
        for child in self.children:
            if child.process is None:
                continue
            # Also reaps stragglers of a child that did exit (e.g. an orphaned pool process).
            self._signal(child, signal.SIGKILL, group=True)
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.output.line("run", f"{child.name} (pid {child.pid}) did not die after SIGKILL")
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=2)
            if child.process is not None:
                self.output.line("run", f"{child.name} stopped (exit code {child.process.returncode})")

    @staticmethod
    def _signal(child: Child, signum: int, *, group: bool) -> None:
        try:
            if group:
                os.killpg(child.pid, signum)
            else:
                os.kill(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def run_setup_step(name: str, argv: list[str], *, output: Output, env: dict[str, str], stop: StopRequest) -> int:
    """Run one preparation command to completion, relaying its output; stop early on request."""
    supervisor = Supervisor([(name, argv)], output=output, env=env, stop=stop)
    child = supervisor.children[0]
    supervisor._spawn(child)
    relay = threading.Thread(target=supervisor._relay, args=(child,), daemon=True)
    relay.start()
    while child.alive():
        if stop.is_set():
            supervisor.stop_all()
            return 130
        time.sleep(POLL_SECONDS)
    relay.join(timeout=2)
    return child.process.returncode if child.process else 1


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class ReadinessProbe:
    """Prints one banner when /readyz first answers 200 (database, broker and worker up)."""

    def __init__(self, url: str, output: Output, banner: list[str]) -> None:
        self.url = url
        self.output = output
        self.banner = banner
        self.done = False
        self.next_at = 0.0

    def __call__(self) -> None:
        if self.done or time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + 0.5
        try:
            # /readyz may wait up to a second for the worker's ping reply.
            with urllib.request.urlopen(self.url, timeout=2.5) as response:
                ready = response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return
        if ready:
            self.done = True
            for line in self.banner:
                self.output.line("run", line)


def build_commands(host: str, port: int) -> list[tuple[str, list[str]]]:
    python = sys.executable
    return [
        (
            "web",
            [
                python, "-m", "gunicorn", "promptpilot.wsgi",
                "--bind", f"{host}:{port}", "--workers", "2", "--threads", "4",
                "--graceful-timeout", "5", "--access-logfile", "-", "--error-logfile", "-", "--no-control-socket",
            ],
        ),
        (
            "worker",
            [
                # No -l: every child logs at PROMPTPILOT_LOG_LEVEL (INFO unless set).
                python, "-m", "celery", "-A", "promptpilot", "worker", "--hostname", "embedded@%h",
            ],
        ),
        ("beat", [python, "-m", "celery", "-A", "promptpilot", "beat"]),
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run PromptPilot's web, worker and beat in the foreground.")
    parser.add_argument("--host", default=os.environ.get("PROMPTPILOT_HOST") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PROMPTPILOT_PORT") or 8000))
    parser.add_argument("--grace", type=float, default=GRACE_SECONDS, help="Seconds between SIGTERM and SIGKILL.")
    parser.add_argument("--skip-setup", action="store_true", help="Do not run migrate, collectstatic and seed_demo.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output = Output()
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "promptpilot.settings")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PROMPTPILOT_LOG_FORMAT", "console")  # people read these lines; servers get JSON
    base_url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"

    if not port_is_free(args.host, args.port):
        output.line("run", f"{args.host}:{args.port} is already in use; pick another port with --port "
                           "or PROMPTPILOT_PORT (e.g. make run RUN_ARGS='--port 8001').")
        return 2

    stop = StopRequest()
    stop.install()

    database = env.get("DATABASE_URL") or "SQLite in " + env.get("PROMPTPILOT_VAR_DIR", str(BASE_DIR / "var"))
    broker = env.get("CELERY_BROKER_URL") or env.get("REDIS_URL") or "filesystem broker (no server)"
    output.line("run", f"database: {database.split('@')[-1]} · broker: {broker.split('@')[-1]}")

    if not args.skip_setup:
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        steps = [
            ["migrate", "--noinput"],
            ["collectstatic", "--noinput", "-v", "0"],
            ["seed_demo", "--base-url", base_url],
        ]
        for step in steps:
            output.line("setup", "manage.py " + " ".join(step))
            code = run_setup_step("setup", manage + step, output=output, env=env, stop=stop)
            if stop.is_set():
                output.line("run", f"{stop.reason} received during setup; not starting.")
                return 0
            if code != 0:
                output.line("run", f"manage.py {step[0]} failed (exit code {code}); not starting.")
                return code
    if stop.is_set():
        return 0

    supervisor = Supervisor(
        build_commands(args.host, args.port), output=output, env=env, grace_seconds=args.grace, stop=stop
    )
    supervisor.start()
    probe = ReadinessProbe(
        f"{base_url}/readyz",
        output,
        [
            f"PromptPilot is up: {base_url}/admin/ (user demo; see the setup lines above for the password)",
            "Press Ctrl-C to stop web, worker and beat.",
        ],
    )
    return supervisor.wait(on_tick=probe)


if __name__ == "__main__":
    sys.exit(main())
