"""The Celery application. Workers start with ``celery -A promptpilot worker``."""
import os

from celery import Celery
from celery.signals import (
    beat_init,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "promptpilot.settings")

app = Celery("promptpilot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _level_given(loglevel):
    """``-l LEVEL`` when it was given, else None. Celery passes its own default (WARNING)
    when it was not, which would hide every INFO event and PROMPTPILOT_LOG_LEVEL with it."""
    import click
    from click.core import ParameterSource

    context = click.get_current_context(silent=True)
    if context is None:  # a worker started from code: its caller chose the level
        return loglevel
    return loglevel if context.get_parameter_source("loglevel") not in (None, ParameterSource.DEFAULT) else None


@setup_logging.connect
def _keep_django_logging(loglevel=None, **kwargs) -> None:
    """Workers and beat log as web does (settings.LOGGING: JSON lines or console lines,
    with the ids of the run, at PROMPTPILOT_LOG_LEVEL). A receiver of this signal stops
    Celery from replacing the root logger's handlers with its own format; ``-l LEVEL``,
    when given, still sets the level."""
    import logging.config

    from django.conf import settings

    from promptpilot.common.logs import set_process_level

    logging.config.dictConfig(settings.LOGGING)
    level = _level_given(loglevel)
    if level:
        set_process_level(level)


@celeryd_init.connect
def _pooled_connections_for_a_threaded_worker(sender=None, options=None, **kwargs) -> None:
    """A worker whose pool runs step attempts in threads takes its PostgreSQL connections
    from one bounded psycopg pool (settings.PROMPTPILOT["DB_POOL"]) instead of one per
    thread. Sent before the worker's first query. Prefork children keep one connection
    each (a pool does not survive a fork); the processes of a many-process thread worker
    (promptpilot/common/worker_pool.py) each make their own pool when they start."""
    from celery import concurrency
    from celery.concurrency.thread import TaskPool as ThreadPool
    from django.conf import settings

    from promptpilot.common.db import pool_connections

    pool_cls = (options or {}).get("pool_cls") or app.conf.worker_pool
    if isinstance(pool_cls, str):
        pool_cls = concurrency.get_implementation(pool_cls)
    if isinstance(pool_cls, type) and issubclass(pool_cls, ThreadPool):
        pool_connections(options=settings.PROMPTPILOT["DB_POOL"], application_name=f"promptpilot worker {sender}")


@worker_init.connect
@beat_init.connect
def _refuse_to_start_with_unsafe_settings(**kwargs) -> None:
    """Run Django's system checks (workflows/checks.py) so that, e.g., a backoff longer
    than the broker's visibility timeout stops the worker at start-up, not at 3 a.m."""
    from django.core import checks

    errors = [e for e in checks.run_checks() if e.is_serious()]
    if errors:
        raise SystemExit("PromptPilot refuses to start:\n" + "\n".join(str(e) for e in errors))


@task_prerun.connect
def _fresh_enough_database_connection(task=None, **kwargs) -> None:
    """Reuse the worker's connection across tasks, but not one that is broken or older
    than CONN_MAX_AGE (the same rule Django applies at each request). Not for a task
    applied inside another one (the next step of a run): the connection was just used."""
    from django.db import close_old_connections

    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()


@task_postrun.connect
def _connection_back_to_the_pool(task=None, **kwargs) -> None:
    """A pooled connection goes back to the pool when its task ends, for the next thread
    (Celery's Django fixup keeps connections for CELERY_DB_REUSE_MAX tasks otherwise)."""
    from promptpilot.common.db import release_connection

    if task is not None and not getattr(task.request, "is_eager", False):
        release_connection()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _send_held_starts(**kwargs) -> None:
    """A worker process that started runs (schedules, events, the reaper) sends their
    wake-up messages before it exits (pool children skip atexit handlers)."""
    from workflows.services.relay import relay_flush

    relay_flush(timeout=5)
