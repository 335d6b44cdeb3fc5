"""Django settings for PromptPilot. Values that the environment changes come from env.py."""
from __future__ import annotations

import os

import dj_database_url

from promptpilot.common import task_names
from promptpilot.common.logs import logging_config

from . import env

BASE_DIR = env.BASE_DIR
SECRET_KEY = env.SECRET_KEY
DEBUG = env.DEBUG
ALLOWED_HOSTS = env.ALLOWED_HOSTS
CSRF_TRUSTED_ORIGINS = env.CSRF_TRUSTED_ORIGINS
if env.BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "promptpilot.common.admin_site.PromptPilotAdminConfig",  # django.contrib.admin, our sections first
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally: docs work offline
    "django_celery_beat",
    "promptpilot.common",
    "providers",
    "workflows",
    "triggers",
]

MIDDLEWARE = [
    # First: every response, webhook deliveries' included, echoes X-Request-ID, and every
    # log line of the request carries it.
    "promptpilot.common.middleware.RequestIdMiddleware",
    # Health checks call 127.0.0.1 or a pod's address: answered before the Host check.
    "promptpilot.common.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Webhook deliveries stop here: they need none of what follows (triggers/middleware.py).
    "triggers.middleware.WebhookFastLaneMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "promptpilot.urls"
WSGI_APPLICATION = "promptpilot.wsgi.application"
APPEND_SLASH = False  # API paths answer with or without a trailing slash (see urls.py)

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "workflows.context_processors.attention",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.parse(env.DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file in the embedded default: WAL lets
    # readers work beside the writer, IMMEDIATE transactions queue writers instead of
    # failing with "database is locked" half-way through a transaction.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env.PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Lets psycopg prepare statements at all. Django's own queries bind on the client and
    # are never prepared; only promptpilot.common.db.run_prepared's few hot ones are.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if env.REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env.REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/workflows/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["promptpilot.formats"]  # times to the second

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# Request bodies: API payloads are JSON; 1 MiB is plenty and bounds memory per request.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "promptpilot.common.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "promptpilot.common.exception_handler.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": ["promptpilot.common.json_text.TextSafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
REST_KNOX = {"TOKEN_TTL": None, "AUTH_HEADER_PREFIX": "Token"}

SPECTACULAR_SETTINGS = {
    "TITLE": "PromptPilot API",
    "DESCRIPTION": "Define prompt workflows, run them durably, inspect every run.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env.CELERY_BROKER_URL
CELERY_TASK_ALWAYS_EAGER = env.CELERY_TASK_ALWAYS_EAGER
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# NOTE: the database is the source of truth; these make the broker a good backstop:
# ack after the step ran, give the message back if the pool child dies, and never
# let one worker hoard messages it has not started.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": env.CELERY_VISIBILITY_TIMEOUT}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport with atomic writes, claims and redelivery of a dead
    # consumer's messages (promptpilot/common/embedded_broker.py; issue 11).
    CELERY_BROKER_TRANSPORT = "promptpilot.common.embedded_broker:Transport"
    _broker_dir = env.VAR_DIR / "broker"
    for _sub in ("out", "control", "tmp", "processing", "quarantine"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            "data_folder_in": str(_broker_dir / "out"),
            "data_folder_out": str(_broker_dir / "out"),
            "control_folder": str(_broker_dir / "control"),
            "tmp_folder": str(_broker_dir / "tmp"),
            "processing_folder": str(_broker_dir / "processing"),
            "quarantine_folder": str(_broker_dir / "quarantine"),
            # The filesystem transport polls its folder; 1 s (kombu's default) per hop
            # would make a 3-step demo run take 3+ s.
            "polling_interval": 0.1,
        }
    )
else:
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # kombu's Redis transport, minus a new redis.Redis per command (promptpilot/common/broker.py).
        CELERY_BROKER_TRANSPORT = "promptpilot.common.broker:Transport"
    # Fail fast when the broker is down at enqueue time: the execution stays PENDING
    # in the database and the reaper enqueues it again later.
    CELERY_BROKER_CONNECTION_TIMEOUT = 2
    CELERY_BROKER_TRANSPORT_OPTIONS.update({"max_retries": 1, "socket_connect_timeout": 2})
CELERY_TASK_PUBLISH_RETRY = False
# Celery's Django fixup closes the database connection around every task unless this is
# set, so each step would open a new PostgreSQL connection (the largest single cost in
# bench/engine.py). Keep them; promptpilot/celery.py drops stale or broken ones before
# each task via close_old_connections(), which honours CONN_MAX_AGE.
CELERY_DB_REUSE_MAX = 1000
CELERY_BEAT_SCHEDULER = env.CELERY_BEAT_SCHEDULER
CELERY_TIMEZONE = "UTC"
# The worker runtime (docs/WORKFLOW_ENGINE.md, "The worker runtime"): step attempts spend
# nearly all their time waiting on model and HTTP calls, so a worker runs many of them in
# threads (`celery -A promptpilot worker` with no flags), in one process per core so that
# their CPU-bound part (rendering, JSON) uses every core.


def _worker_processes() -> int:
    if env.WORKER_PROCESSES.strip().lower() != "auto":
        return max(1, int(env.WORKER_PROCESSES))
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        return 1
    return max(1, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


worker_processes = _worker_processes()
# `threads` in more than one process: promptpilot/common/worker_pool.py forks them, and the
# worker's concurrency (Celery's, which sizes its prefetch) is that of all of them.
if env.WORKER_POOL == "threads" and worker_processes > 1:
    CELERY_WORKER_POOL = "promptpilot.common.worker_pool:ProcessThreadPool"
    CELERY_WORKER_CONCURRENCY = env.WORKER_CONCURRENCY * worker_processes
else:
    CELERY_WORKER_POOL = env.WORKER_POOL
    CELERY_WORKER_CONCURRENCY = env.WORKER_CONCURRENCY

# --- PromptPilot -----------------------------------------------------------
PROMPTPILOT = {
    "STEP_LEASE_SECONDS": env.STEP_LEASE_SECONDS,
    "REAPER_INTERVAL_SECONDS": env.REAPER_INTERVAL_SECONDS,
    "ENQUEUE_GRACE_SECONDS": env.ENQUEUE_GRACE_SECONDS,
    "MAX_LOST_ATTEMPTS": env.MAX_LOST_ATTEMPTS,
    "WORKFLOW_MAX_DEPTH": env.WORKFLOW_MAX_DEPTH,
    "MAX_BACKOFF_SECONDS": env.MAX_BACKOFF_SECONDS,
    "INLINE_STEP_BUDGET_SECONDS": env.INLINE_STEP_BUDGET_SECONDS,
    "START_BATCH_SECONDS": env.START_BATCH_SECONDS,
    "PREPARED_STATEMENTS": env.PREPARED_STATEMENTS,
    "FAST_STATEMENTS": env.FAST_STATEMENTS,
    "VISIBILITY_TIMEOUT": env.CELERY_VISIBILITY_TIMEOUT,
    "PROVIDER_MODULES": env.PROVIDER_MODULES,
    "DEMO_PASSWORD": env.DEMO_PASSWORD,
    "METRICS_TOKEN": env.METRICS_TOKEN,
    "READYZ_WORKER_TIMEOUT_SECONDS": env.READYZ_WORKER_TIMEOUT_SECONDS,
    "READYZ_CACHE_SECONDS": env.READYZ_CACHE_SECONDS,
    "METRICS_MULTIPROC_DIR": env.METRICS_MULTIPROC_DIR,
    "METRICS_ENABLED": env.METRICS_ENABLED,
    # PostgreSQL connections of a thread-pool worker process come from this psycopg pool
    # (promptpilot/common/db.py, applied by promptpilot/celery.py at worker start).
    "WORKER_PROCESSES": worker_processes,
    "DB_POOL": {"min_size": 1, "max_size": env.DB_POOL_SIZE, "timeout": env.DB_POOL_TIMEOUT, "max_idle": 300.0},
    # Template limits: a template cannot hang or flood a worker.
    "TEMPLATE_MAX_OUTPUT_CHARS": 200_000,
    "TEMPLATE_MAX_LOOP_ITERATIONS": 10_000,
    # A preview runs in a web process: each of its renders gets this many seconds of CPU,
    # so previews cannot hold the web tier. On workers a render gets its step's timeout.
    "TEMPLATE_PREVIEW_MAX_SECONDS": 1.0,
    # Failed credentials (wrong passwords at /api/auth/token/, wrong X-API-Key values) allowed
    # per account or trigger and per client address before every try answers 429.
    "AUTH_FAILURE_RATE_PER_TARGET": "10/min",
    "AUTH_FAILURE_RATE_PER_CLIENT": "30/min",
}

# JSON lines or console lines, each with the ids of its run (promptpilot/common/logs.py).
# Celery's worker and beat keep this configuration too (promptpilot/celery.py).
LOGGING = logging_config(log_format=env.LOG_FORMAT, level=env.LOG_LEVEL)

# The reaper sweep (see workflows/services/reaper.py). DatabaseScheduler copies this
# entry into django-celery-beat's tables, where staff can see and tune it in admin.
CELERY_BEAT_SCHEDULE = {
    "workflows-reaper": {
        "task": task_names.REAP,
        "schedule": env.REAPER_INTERVAL_SECONDS,
        "options": {"expires": max(env.REAPER_INTERVAL_SECONDS * 3, 30)},
    },
}

# Fields named `type`/`status` use different enums; name each once for the schema.
# Page parameters of lists, 413 and 414: stated once for every operation.
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "promptpilot.common.schema.api_facts",
]
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    "VariableTypeEnum": "workflows.models.enums.VariableType",
    "StepTypeEnum": "workflows.models.enums.StepType",
    "TriggerTypeEnum": "workflows.models.enums.TriggerType",
    "ExecutionStatusEnum": "workflows.models.enums.ExecutionStatus",
    "StepExecutionStatusEnum": "workflows.models.enums.StepExecutionStatus",
    "TriggerKindEnum": "triggers.models.TriggerKind",
}

# --- Triggers (docs/TRIGGERS.md) ---------------------------------------------
# Webhook secrets are Fernet-encrypted with keys derived (HKDF-SHA256) from these
# strings; the first encrypts, all decrypt. Default: derived from SECRET_KEY.
PROMPTPILOT_SECRETS_KEYS = env.SECRETS_KEYS or [SECRET_KEY]
PROMPTPILOT["TRIGGER_DEFAULT_RATE"] = env.TRIGGER_DEFAULT_RATE
PROMPTPILOT["WEBHOOK_TOLERANCE_SECONDS"] = 300  # Standard Webhooks: 5 minutes either way
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["InvocationStatusEnum"] = "triggers.models.InvocationStatus"
# The schedule sweep (triggers/services/schedules.py): fires every due SCHEDULED slot.
# One entry for all schedules; a tick older than 5 s is dropped (a newer one covers it).
CELERY_BEAT_SCHEDULE["triggers-scheduler"] = {
    "task": task_names.FIRE_DUE_SCHEDULES,
    "schedule": 1.0,
    "options": {"expires": 5},
}
# Platform events whose queueing was lost (triggers/services/events.py), with the reaper's rhythm.
CELERY_BEAT_SCHEDULE["triggers-event-redelivery"] = {
    "task": task_names.REDELIVER_EVENTS,
    "schedule": env.REAPER_INTERVAL_SECONDS,
    "options": {"expires": max(env.REAPER_INTERVAL_SECONDS * 3, 30)},
}
PROMPTPILOT["BEAT_HEARTBEAT_FILE"] = env.BEAT_HEARTBEAT_FILE
PROMPTPILOT["SCHEDULE_MIRROR_TASKS"] = env.SCHEDULE_MIRROR_TASKS
PROMPTPILOT["SCHEDULE_SWEEPERS"] = env.SCHEDULE_SWEEPERS

# --- Providers (docs/PROVIDERS.md) -------------------------------------------
# Keyed by the environment variable's name, so error messages can name it. Read at call
# time by providers/credentials.py, never at import.
PROMPTPILOT["PROVIDERS"] = {
    "OPENAI_API_KEY": env.OPENAI_API_KEY,
    "OPENAI_BASE_URL": env.OPENAI_BASE_URL,
    "ANTHROPIC_API_KEY": env.ANTHROPIC_API_KEY,
    "ANTHROPIC_BASE_URL": env.ANTHROPIC_BASE_URL,
    "GEMINI_API_KEY": env.GEMINI_API_KEY,
    "GEMINI_BASE_URL": env.GEMINI_BASE_URL,
}

# --- Provider operations: prices, shared rate limits, connections (docs/PROVIDER_OPERATIONS.md)
# Rate limits are shared through Redis when there is one (REDIS_URL, else a redis://
# broker); without it each worker process enforces them on its own.
PROMPTPILOT["RATE_LIMIT_REDIS_URL"] = env.REDIS_URL or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
# A step waits at most this long in all (and never past its step's timeout) for a
# rate-limit slot; then the attempt fails RateLimited and the step's retry policy applies.
PROMPTPILOT["RATE_LIMIT_MAX_WAIT_SECONDS"] = 30.0
# ...but it holds its worker thread only this long per try: past it the attempt is
# deferred (PENDING again, sent back as a countdown, not counted as a retry).
PROMPTPILOT["RATE_LIMIT_HOLD_SECONDS"] = 1.0
# Workers re-read prices, limits and connections after this many seconds.
PROMPTPILOT["PROVIDER_CONFIG_CACHE_SECONDS"] = 10.0

# --- EVENT triggers (docs/TRIGGERS.md) ----------------------------------------
# Loop protection: a run started by an event at this depth starts no further runs.
PROMPTPILOT["EVENT_MAX_DEPTH"] = env.EVENT_MAX_DEPTH

# --- Feature switches (django-waffle) -----------------------------------------
# Global on/off switches staff flip in admin → Waffle → Switches, e.g.
# ``workflow.multiModel`` (docs/PROVIDERS.md#multi-model-steps). Switches need no
# middleware: they are read server-side, not per request.
INSTALLED_APPS += ["waffle"]

# --- HTTP steps (docs/WORKFLOW_ENGINE.md "HTTP steps") -------------------------
# host:port pairs allowed although they resolve to non-public addresses (SSRF guard).
PROMPTPILOT["HTTP_ALLOWED_HOSTS"] = env.HTTP_ALLOWED_HOSTS
PROMPTPILOT["HTTP_MAX_RESPONSE_BYTES"] = 1024 * 1024  # DESIGN §8: bodies over 1 MiB fail the step
PROMPTPILOT["HTTP_MAX_REDIRECTS"] = 5
