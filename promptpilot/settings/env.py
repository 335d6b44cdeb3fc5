"""The only module that reads ``os.environ``.

Every setting that the environment can change is read here, with its default, so the
README's configuration table has one place to be checked against.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("PROMPTPILOT_VAR_DIR", BASE_DIR / "var"))


def _str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in _str(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    """DJANGO_SECRET_KEY, or a random key kept in var/ for the embedded default."""
    key = _str("DJANGO_SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


SECRET_KEY = _secret_key()
DEBUG = _bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = _list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = _list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients):
# requests count as https (absolute links, such as approval links, say https) and the
# session and CSRF cookies are sent over https only.
BEHIND_TLS_PROXY = _bool("DJANGO_BEHIND_TLS_PROXY", False)

DATABASE_URL = _str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
REDIS_URL = _str("REDIS_URL")
# The embedded default needs no broker server: files under VAR_DIR/broker
# (promptpilot/common/embedded_broker.py, wired in base.py).
CELERY_BROKER_URL = _str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_VISIBILITY_TIMEOUT = _int("CELERY_VISIBILITY_TIMEOUT", 3600)
CELERY_TASK_ALWAYS_EAGER = _bool("CELERY_TASK_ALWAYS_EAGER", False)
# django-celery-beat's DatabaseScheduler minus the trigger:<id> records (triggers/beat.py).
CELERY_BEAT_SCHEDULER = _str("CELERY_BEAT_SCHEDULER", "triggers.beat:DatabaseScheduler")
# Touched by that scheduler after each task it sends; `manage.py beat_heartbeat` (beat's
# health check in docker-compose) reads its age (docs/OPERATIONS.md, "Readiness and health").
BEAT_HEARTBEAT_FILE = Path(_str("PROMPTPILOT_BEAT_HEARTBEAT_FILE", str(VAR_DIR / "beat-heartbeat")))

# Durable execution knobs (see docs/WORKFLOW_ENGINE.md, "Durability").
STEP_LEASE_SECONDS = _float("PROMPTPILOT_STEP_LEASE_SECONDS", 30.0)
REAPER_INTERVAL_SECONDS = _float("PROMPTPILOT_REAPER_INTERVAL_SECONDS", 10.0)
ENQUEUE_GRACE_SECONDS = _float("PROMPTPILOT_ENQUEUE_GRACE_SECONDS", 30.0)
MAX_LOST_ATTEMPTS = _int("PROMPTPILOT_MAX_LOST_ATTEMPTS", 3)
WORKFLOW_MAX_DEPTH = _int("PROMPTPILOT_WORKFLOW_MAX_DEPTH", 5)  # WORKFLOW steps: child runs nested at most this deep
MAX_BACKOFF_SECONDS = _float("PROMPTPILOT_MAX_BACKOFF_SECONDS", 300.0)
# A worker that checkpointed a step applies the next step's task itself (no broker hop)
# while its chain has run for less than this; 0 sends every step's task through the broker.
INLINE_STEP_BUDGET_SECONDS = _float("PROMPTPILOT_INLINE_STEP_BUDGET_SECONDS", 2.0)
# New runs' wake-up messages leave each process in batches, at most one send per this
# many seconds (workflows/services/relay.py); 0 sends each one on its own at commit.
START_BATCH_SECONDS = _float("PROMPTPILOT_START_BATCH_SECONDS", 0.05)
# Server-side prepared statements for the hottest queries (promptpilot/common/db.py);
# false behind a connection pooler that does not keep them.
PREPARED_STATEMENTS = _bool("PROMPTPILOT_PREPARED_STATEMENTS", True)
# The hand-written PostgreSQL statements of the commonest transitions (admission, claim,
# checkpoint: workflows/services/transitions/_postgres.py); false runs the general ORM code.
FAST_STATEMENTS = _bool("PROMPTPILOT_FAST_STATEMENTS", True)

# The worker runtime (docs/WORKFLOW_ENGINE.md, "The worker runtime"): `celery -A promptpilot
# worker` runs this many step attempts at once in threads of one process; while one waits on
# a model it holds no database connection, and the process takes at most DB_POOL_SIZE
# PostgreSQL connections from a pool (a thread waits for one at most DB_POOL_TIMEOUT s).
WORKER_POOL = _str("PROMPTPILOT_WORKER_POOL", "threads")
WORKER_CONCURRENCY = _int("PROMPTPILOT_WORKER_CONCURRENCY", 200)
# How many processes a `threads` worker forks, each running WORKER_CONCURRENCY attempts
# (promptpilot/common/worker_pool.py): "auto" is one per core on PostgreSQL and 1 on
# SQLite (one writer at a time: more processes would only queue for its lock).
WORKER_PROCESSES = _str("PROMPTPILOT_WORKER_PROCESSES", "auto")
DB_POOL_SIZE = _int("PROMPTPILOT_DB_POOL_SIZE", 10)
DB_POOL_TIMEOUT = _float("PROMPTPILOT_DB_POOL_TIMEOUT", 30.0)

# /readyz (promptpilot/common/readiness.py): how long a worker has to answer its ping, and
# how long each web process reuses the answer before pinging again.
READYZ_WORKER_TIMEOUT_SECONDS = _float("PROMPTPILOT_READYZ_WORKER_TIMEOUT_SECONDS", 1.0)
READYZ_CACHE_SECONDS = _float("PROMPTPILOT_READYZ_CACHE_SECONDS", 5.0)

# Extra provider adapter modules to import at start-up (comma separated dotted paths).
PROVIDER_MODULES = _list("PROMPTPILOT_PROVIDER_MODULES", "")

DEMO_PASSWORD = _str("PROMPTPILOT_DEMO_PASSWORD")
METRICS_TOKEN = _str("PROMPTPILOT_METRICS_TOKEN")
LOG_LEVEL = _str("PROMPTPILOT_LOG_LEVEL", "INFO")
# Log lines (docs/OPERATIONS.md, "Logs"): "json" (one JSON object a line, the default) or
# "console" (for people: the default with DJANGO_DEBUG=1; `make run` sets it for its children).
LOG_FORMAT = _str("PROMPTPILOT_LOG_FORMAT", "console" if DEBUG else "json").strip().lower()
# prometheus-client's multiprocess mode (docs/OPERATIONS.md, "Metrics and alerts"): every
# gunicorn worker and Celery worker process writes its counters under this folder, and
# /metrics adds them up. Unset: each process counts in memory, /metrics shows its own.
METRICS_MULTIPROC_DIR = _str("PROMETHEUS_MULTIPROC_DIR")
# false: the event counters and histograms record nothing (promptpilot/common/metrics.py);
# /metrics still serves the gauges it reads from the database. For measuring their cost.
METRICS_ENABLED = _bool("PROMPTPILOT_METRICS_ENABLED", True)

# Triggers (docs/TRIGGERS.md). Keys that encrypt webhook secrets at rest, comma
# separated: the first encrypts, every one decrypts (rotation). Empty: derived from
# SECRET_KEY, so changing DJANGO_SECRET_KEY then makes stored webhook secrets unreadable.
SECRETS_KEYS = _list("PROMPTPILOT_SECRETS_KEY", "")
# Rate of an API trigger whose config has no rate_limit ("N/s", "N/min", "N/hour", "N/day").
TRIGGER_DEFAULT_RATE = _str("PROMPTPILOT_TRIGGER_DEFAULT_RATE", "60/min")

# Model providers (docs/PROVIDERS.md). An empty key fails PROMPT steps that use the
# provider with MissingCredentials; an empty base URL means the vendor's own endpoint.
OPENAI_API_KEY = _str("OPENAI_API_KEY")
OPENAI_BASE_URL = _str("OPENAI_BASE_URL")
ANTHROPIC_API_KEY = _str("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = _str("ANTHROPIC_BASE_URL")
GEMINI_API_KEY = _str("GEMINI_API_KEY")
GEMINI_BASE_URL = _str("GEMINI_BASE_URL")

# EVENT triggers (docs/TRIGGERS.md): how many event-started runs may follow one another
# in a chain (A's completion starts B, B's starts C...) before a trigger refuses to fire.
EVENT_MAX_DEPTH = _int("PROMPTPILOT_EVENT_MAX_DEPTH", 5)

# SCHEDULED triggers (docs/TRIGGERS.md): whether the per-trigger trigger:<id> periodic
# tasks are enabled while their trigger is active (they are kept in sync either way), and
# how many schedule sweeps may fire due times at once.
SCHEDULE_MIRROR_TASKS = _bool("PROMPTPILOT_SCHEDULE_MIRROR_TASKS", True)
SCHEDULE_SWEEPERS = _int("PROMPTPILOT_SCHEDULE_SWEEPERS", 2)

# HTTP steps (docs/WORKFLOW_ENGINE.md "HTTP steps"): host:port pairs HTTP steps may call
# although they resolve to loopback, private or link-local addresses, comma separated,
# e.g. "127.0.0.1:8080,inventory.internal:443". Empty: only public addresses.
HTTP_ALLOWED_HOSTS = _list("PROMPTPILOT_HTTP_ALLOWED_HOSTS", "")
