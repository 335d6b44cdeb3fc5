"""What every benchmark in bench/ needs the same way: its environment, a database and a Redis
database of its own (one run at a time on each), the machine's description for the figures,
percentiles, polling, child processes (worker, gunicorn) in their own process groups, and
what an interruption (Ctrl-C, SIGTERM) or a failure during the rounds does.

Importing this module sets nothing up: each script calls ``configure_env`` before
``django.setup()``, then the setup helpers.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The test suite's Redis databases (Makefile's TEST_REDIS_URL, providers/tests/test_ratelimit.py):
# a benchmark that flushed one would break a suite running beside it.
SUITE_REDIS_DATABASES = (11, 15)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# --------------------------------------------------------------------------- environment


def configure_env(*, database_url: str, broker_url: str, settings_module: str = "promptpilot.settings",
                  app_name: str | None = None) -> None:
    """Before ``django.setup()``: the benchmark's own database and broker unless the
    environment names others, quiet logs, and (``app_name``) libpq's application_name
    on this script's own PostgreSQL connections (not passed on to children)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    os.environ.setdefault("DATABASE_URL", database_url)
    os.environ.setdefault("CELERY_BROKER_URL", broker_url)
    os.environ.setdefault("PROMPTPILOT_LOG_LEVEL", "WARNING")
    if app_name:
        os.environ["PGAPPNAME"] = app_name


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a worker or server this benchmark starts: ours, without this
    script's application_name and without proxies (everything it talks to is local)."""
    env = dict(os.environ)
    env.pop("PGAPPNAME", None)
    for var in PROXY_VARIABLES:
        env.pop(var, None)
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def p50(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    return percentile(values, 0.95)


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float, what: str,
               check: Callable[[], None] | None = None) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned); ``check`` (e.g. a
    worker's ``check_alive``) runs between polls; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:.0f} s")
        time.sleep(interval)


# --------------------------------------------------------------------------- the machine


def git_code() -> str:
    """Which code was measured: the commit, and whether product code had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "workflows", "promptpilot", "providers",
                                "triggers"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head or '?'}" + (" + uncommitted changes in product code" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine(**extra: str) -> dict[str, str]:
    """The figures' heading: date, code, CPU, memory, load, versions of what was measured."""
    import celery
    from django.db import connection

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        sync = cursor.fetchone()[0]
        cursor.execute("SHOW max_connections")
        max_conn = cursor.fetchone()[0]
    redis_version = "?"
    with contextlib.suppress(Exception):
        redis_version = redis_client().info("server").get("redis_version", "?")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": git_code(),
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "load avg 1/5 min": "{:.2f} / {:.2f}".format(*os.getloadavg()[:2]),  # others sharing the machine
        "python": platform.python_version(),
        "postgres": f"{pg} (synchronous_commit={sync}, max_connections={max_conn})",
        "redis": redis_version,
        "celery": celery.__version__,
        **extra,
    }


# --------------------------------------------------------------------------- database


def conninfo(dbname: str | None = None, *, app_name: str | None = None) -> str:
    """libpq connection string of Django's default database (or ``dbname`` on its server)."""
    import psycopg
    from django.db import connection

    s = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=dbname or s["NAME"], user=s["USER"] or None, password=s.get("PASSWORD") or None,
        host=s.get("HOST") or None, port=str(s.get("PORT") or "") or None,
        application_name=app_name or os.environ.get("PGAPPNAME") or None)


def ensure_database() -> None:
    """The benchmark's own PostgreSQL database, created on first use and migrated; never a
    database the test suites use."""
    import psycopg
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    if connection.vendor != "postgresql":
        raise SystemExit(f"The benchmark needs PostgreSQL; DATABASE_URL gives {connection.vendor}.")
    name = connection.settings_dict["NAME"]
    if name in ("test", "postgres", "template0", "template1") or name.startswith("test_"):
        raise SystemExit(f"Refusing to use the database {name!r}: give the benchmark a database of its own.")
    try:
        with psycopg.connect(conninfo(), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise SystemExit(f"Cannot reach the database ({exc}).") from None
        print(f"Creating the database {name}...", flush=True)
        with psycopg.connect(conninfo("postgres"), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        print(f"Migrating the database {name}...", flush=True)
        call_command("migrate", interactive=False, verbosity=0)


_database_guards: list[Any] = []


def claim_database(lock_id: int, script: str) -> None:
    """One run of ``script`` at a time per database: a session advisory lock held on a
    connection of its own until this process exits."""
    import psycopg

    guard = psycopg.connect(conninfo(), autocommit=True)
    if not guard.execute("SELECT pg_try_advisory_lock(%s)", [lock_id]).fetchone()[0]:
        guard.close()
        raise SystemExit(f"Another {script} is running on this database; wait for it.")
    _database_guards.append(guard)


# --------------------------------------------------------------------------- broker


def redis_client(**options: Any):
    import redis

    return redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_connect_timeout=2, **options)


def ensure_broker(*, owner_key: str, owner_ttl: float, script: str) -> None:
    """The benchmark's own Redis database, emptied (stale messages of an interrupted run go)
    and marked as ours for ``owner_ttl`` seconds: two runs on one broker database would take
    each other's messages."""
    url = os.environ["CELERY_BROKER_URL"]
    if not url.startswith("redis://"):
        raise SystemExit(f"The benchmark needs a Redis broker; CELERY_BROKER_URL is {url!r}.")
    match = re.search(r"/(\d+)$", url)
    if match and int(match.group(1)) in SUITE_REDIS_DATABASES:
        raise SystemExit(f"Refusing Redis database {url}: the test suites use {SUITE_REDIS_DATABASES}.")
    try:
        client = redis_client()
        client.ping()
    except Exception as exc:
        raise SystemExit(f"Cannot reach Redis at {url} ({exc}).") from None
    owner = client.get(owner_key)
    if owner is not None:
        raise SystemExit(
            f"Another {script} ({owner.decode(errors='replace')}) is using the broker {url}. Wait for it, "
            f"or delete the key {owner_key!r} if that run is gone (it expires by itself)."
        )
    client.flushdb()  # our own database number only
    client.set(owner_key, f"pid {os.getpid()} since {datetime.now(UTC):%H:%M:%S} UTC", ex=int(owner_ttl))


def flush_broker() -> None:
    """Our messages and owner key go (this Redis database only)."""
    with contextlib.suppress(Exception):
        redis_client().flushdb()


# --------------------------------------------------------------------------- child processes


class ChildProcess:
    """A process this benchmark starts (a worker, gunicorn) in its own process group, its
    output in ``log_path``; ``stop`` ends the whole group (the worker's pool children too)."""

    label = "process"

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.started = time.time()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pgid = self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"The {self.label} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)  # the group of the process we started, by its id

    def stop(self, grace: float = 20) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.signal(signal.SIGKILL)  # children left behind, if any
        self._log.close()


# --------------------------------------------------------------------------- interruption


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """From now on SIGTERM and SIGINT raise KeyboardInterrupt, so that ``interruptible``
    stops the children (SIGINT too: started in the background, a script has it ignored)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


@dataclass
class Interruption:
    interrupted: bool = False


@contextlib.contextmanager
def interruptible(*, worker: Callable[[], ChildProcess | None], cleanup: Callable[[], None]) -> Iterator[Interruption]:
    """Around a benchmark's rounds: on KeyboardInterrupt "Interrupted." and ``.interrupted``
    (the script then exits 130); on any other error the tail of ``worker()``'s log, if one
    was started, and the error goes on; ``cleanup()`` (stop the children) in every case."""
    interruption = Interruption()
    try:
        yield interruption
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        interruption.interrupted = True
    except Exception:
        child = worker()
        if child is not None:
            print(f"--- worker log ({child.log_path}) ---\n{child.tail()}", file=sys.stderr)
        raise
    finally:
        cleanup()
