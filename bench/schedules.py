"""Schedule benchmark: how late SCHEDULED triggers fire, with N active schedules.

    python bench/schedules.py [--triggers 5000] [--minutes 3] [--mix realistic|every-minute]
                              [--scheduler promptpilot|database|persistent] [--mirrors on|off]
                              [--sweepers 2] [--concurrency 2]

Seeds N active SCHEDULED triggers in bulk (with their ``trigger:<id>`` periodic tasks,
then ``PeriodicTasks.update_changed()``) in a private database, starts the real Celery
beat (PromptPilot's DatabaseScheduler by default, as in production: it leaves the
``trigger:<id>`` records out of beat's heap; ``--scheduler database`` is
django-celery-beat's stock one, which with ``--mirrors on`` runs every record too) and
one worker, and lets the ``triggers-scheduler`` entry fire them for a few minutes. Lateness of a firing = ``invocation.received_at -
scheduled_for`` (both on this machine's clock). It also checks that every scheduled time
in the window was handled exactly once (fired or skipped by the overlap policy).

Mixes (each trigger: one of 20 one-step TRANSFORM workflows; time zone drawn from UTC,
Europe/Paris, America/New_York and Asia/Kolkata, whose +05:30 moves minutes by 30):
  hourly        every trigger hourly at a spread minute: about N/60 (83) scheduled times
                at each minute boundary (the default);
  realistic     10 % every minute, 20 % every 5 minutes (5 phases), 70 % hourly at a
                spread minute: about 760 at each boundary;
  every-minute  all N every minute (N at each boundary: the worst case).

Goal (issue 4): p99 <= 2 s. Everything is bounded in time; processes are stopped at the
end (also on Ctrl-C). See bench/README.md, "Schedules".
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import configure_env, ensure_database, flush_broker, percentile  # noqa: E402
from bench.common import ensure_broker as common_ensure_broker  # noqa: E402
from bench.common import machine as common_machine  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/benchsched"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/8"  # its own db: it is flushed
BENCH_USER = "bench-schedules"
WORKFLOWS = 20
TIMEZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata")
GOAL_P99_S = 2.0
DRAIN_S = 150  # after the window, how long the last scheduled times may take to fire
SCHEDULERS = {"promptpilot": "triggers.beat:DatabaseScheduler",
              "database": "django_celery_beat.schedulers:DatabaseScheduler",
              "persistent": "celery.beat:PersistentScheduler"}


def _configure_env() -> None:
    configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL)


_configure_env()

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from workflows.tests.support.processes import ServiceProcess, celery_argv  # noqa: E402

# --------------------------------------------------------------------------- helpers


def machine() -> dict[str, str]:
    from importlib.metadata import version

    return common_machine(croniter=version("croniter"), **{"django-celery-beat": version("django-celery-beat")})


def ensure_broker() -> None:
    common_ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/schedules.py")


OWNER_KEY = "promptpilot-bench-schedules:owner"
OWNER_TTL_SECONDS = 1800


def cron_for(index: int, mix: str) -> str:
    if mix == "every-minute":
        return "* * * * *"
    if mix == "hourly":
        return f"{index % 60} * * * *"
    bucket, spread = index % 10, index // 10
    if bucket == 0:
        return "* * * * *"
    if bucket in (1, 2):
        return f"{spread % 5}-59/5 * * * *"
    return f"{spread % 60} * * * *"


def reset_and_seed(n: int, mix: str, first_slot: datetime, mirrors: bool) -> None:
    """Drop the previous run's rows, then create N active schedules in bulk."""
    from django.contrib.auth import get_user_model
    from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

    from triggers.models import WorkflowTrigger
    from triggers.services.schedules import (
        FIRE_SCHEDULE_TASK,
        PERIODIC_TASK_EXPIRE_SECONDS,
        _beat_fields,
        periodic_task_name,
        schedule_parse,
    )
    from workflows.models import Workflow, WorkflowExecution, WorkflowStep, WorkflowVariable
    from workflows.services.definitions import workflow_version_create

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    print("Removing the previous run's schedules and runs...", flush=True)
    PeriodicTask.objects.filter(name__startswith="trigger:").delete()
    WorkflowExecution.objects.filter(workflow__owner=user).delete()
    Workflow.objects.filter(owner=user).delete()
    workflows = []
    for index in range(WORKFLOWS):
        workflow = Workflow.objects.create(owner=user, name=f"bench schedule {index}")
        WorkflowVariable.objects.create(workflow=workflow, name="customer", type="STRING", required=True)
        WorkflowStep.objects.create(workflow=workflow, order=1, name="report", type="TRANSFORM",
                                    config={"template": "report for {{ input.customer }}"})
        workflow_version_create(workflow=workflow, note="bench/schedules.py")
        workflows.append(workflow)
    print(f"Seeding {n} SCHEDULED triggers ({mix})...", flush=True)
    schedules: dict[tuple[str, str], object] = {}
    triggers = []
    zones = random.Random(20261125)  # fixed: the same zone for the same index in every run
    for index in range(n):
        cron, tz = cron_for(index, mix), zones.choice(TIMEZONES)
        schedule = schedules.get((cron, tz)) or schedules.setdefault((cron, tz), schedule_parse(cron=cron,
                                                                                            timezone_name=tz))
        triggers.append(WorkflowTrigger(
            workflow=workflows[index % WORKFLOWS], type="SCHEDULED", name=f"bench {index}", is_active=True,
            config={"cron": cron, "timezone": tz, "input": {"customer": f"c{index}"}, "overlap": "skip",
                    "pause_after_failures": None},
            next_run_at=schedule.next_after(first_slot - timedelta(seconds=1)),
        ))
    WorkflowTrigger.objects.bulk_create(triggers, batch_size=1000)
    crontabs = {}
    for key, schedule in schedules.items():
        fields = {**_beat_fields(schedule), "timezone": schedule.timezone}
        crontabs[key] = CrontabSchedule.objects.filter(**fields).first() or CrontabSchedule.objects.create(**fields)
    PeriodicTask.objects.bulk_create([
        PeriodicTask(name=periodic_task_name(t.pk), task=FIRE_SCHEDULE_TASK, args=json.dumps([str(t.pk)]),
                     crontab=crontabs[(t.config["cron"], t.config["timezone"])], enabled=mirrors,
                     expire_seconds=PERIODIC_TASK_EXPIRE_SECONDS, description=f"bench mirror of {t.name}")
        for t in triggers
    ], batch_size=1000)
    PeriodicTasks.update_changed()  # bulk_create sends no signal: tell beat to reload
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE triggers_workflowtrigger")


def expected_slots(start: datetime, end: datetime) -> Counter:
    """(trigger id, scheduled_for) -> 1 for every scheduled time in [start, end)."""
    from triggers.models import WorkflowTrigger
    from triggers.services.schedules import iso_utc, schedule_from_config

    expected: Counter = Counter()
    cache: dict[tuple[str, str], object] = {}
    for pk, config in WorkflowTrigger.objects.filter(name__startswith="bench ").values_list("pk", "config"):
        key = (config["cron"], config["timezone"])
        schedule = cache.get(key) or cache.setdefault(key, schedule_from_config(config))
        moment = schedule.next_after(start - timedelta(seconds=1))
        while moment < end:
            expected[(str(pk), iso_utc(moment))] += 1
            moment = schedule.next_after(moment)
    return expected


# --------------------------------------------------------------------------- run


def start_services(scheduler: str, concurrency: int, sweepers: int, log_dir: Path,
                   ) -> tuple[ServiceProcess, ServiceProcess]:
    # NOTE: the pool through the environment: Celery reads `--pool prefork` as "no --pool"
    # and runs the configured one (threads) instead.
    env = dict(os.environ, PYTHONUNBUFFERED="1", CELERY_BEAT_SCHEDULER=SCHEDULERS[scheduler],
               PROMPTPILOT_SCHEDULE_SWEEPERS=str(sweepers), PROMPTPILOT_WORKER_POOL="prefork")
    worker = ServiceProcess(
        "worker",
        celery_argv("worker", "-l", "warning", "-n", f"bench-sched-{os.getpid()}@%h", "--concurrency",
                    str(concurrency), "--without-gossip", "--without-mingle",
                    "--without-heartbeat"),
        env, log_dir,
    )
    beat_args = ["beat", "-l", "info", "-s", str(log_dir / "beat-schedule")]
    if scheduler != "persistent":
        beat_args += ["-S", SCHEDULERS[scheduler]]
    else:
        beat_args += ["-S", SCHEDULERS["persistent"], "--max-interval", "1"]
    beat = ServiceProcess("beat", celery_argv(*beat_args), env, log_dir)
    try:
        beat.wait_for_log("beat: Starting", timeout=60)
        from promptpilot.celery import app

        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=1):  # the worker answers once it consumes
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{worker.log()[-3000:]}")
    except BaseException:
        beat.stop()
        worker.stop()
        raise
    return worker, beat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=5000)
    parser.add_argument("--minutes", type=int, default=3, help="measured window (scheduled minute boundaries)")
    parser.add_argument("--mix", choices=("hourly", "realistic", "every-minute"), default="hourly")
    parser.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="promptpilot")
    parser.add_argument("--sweepers", type=int, default=2, help="PROMPTPILOT_SCHEDULE_SWEEPERS")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--mirrors", choices=("on", "off"), default="on",
                        help="PROMPTPILOT_SCHEDULE_MIRROR_TASKS: the trigger:<id> periodic tasks enabled (only "
                             "--scheduler database runs them)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()

    from triggers.models import TriggerInvocation

    ensure_database()
    ensure_broker()
    # The first measured slot: the first minute boundary at least 40 s away (seeding, start-up).
    first_slot = (datetime.now(UTC) + timedelta(seconds=40 + 59)).replace(second=0, microsecond=0)
    end = first_slot + timedelta(minutes=args.minutes)
    reset_and_seed(args.triggers, args.mix, first_slot, args.mirrors == "on")
    expected = expected_slots(first_slot, end)
    print(f"{sum(expected.values())} scheduled times in the window {first_slot:%H:%M}-{end:%H:%M} UTC", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    worker, beat = start_services(args.scheduler, args.concurrency, args.sweepers, log_dir)
    window = TriggerInvocation.objects.filter(
        trigger__name__startswith="bench ", status__in=["ACCEPTED", "SKIPPED"],
        payload__scheduled_for__gte=first_slot.isoformat().replace("+00:00", "Z"),
        payload__scheduled_for__lt=end.isoformat().replace("+00:00", "Z"),
    )
    try:
        wait = (end - datetime.now(UTC)).total_seconds()
        print(f"Beat ({args.scheduler}) and worker up; measuring for {wait:.0f} s, then up to {DRAIN_S} s while "
              f"the last times fire (logs: {log_dir})...", flush=True)
        deadline = time.monotonic() + wait + DRAIN_S
        while time.monotonic() < deadline:
            for process in (worker, beat):
                if process.proc.poll() is not None:
                    raise RuntimeError(f"{process.name} exited:\n{process.log()[-3000:]}")
            if datetime.now(UTC) > end and window.count() >= sum(expected.values()):
                break
            time.sleep(2)
    finally:
        beat.stop()
        worker.stop()

    rows = list(
        TriggerInvocation.objects.filter(trigger__name__startswith="bench ", status__in=["ACCEPTED", "SKIPPED"])
        .values_list("trigger_id", "status", "payload", "received_at")
    )
    handled: Counter = Counter()
    lateness: list[float] = []
    by_boundary: dict[str, list[float]] = {}
    by_status: Counter = Counter()
    for trigger_id, status, payload, received_at in rows:
        slot = payload["scheduled_for"]
        if (str(trigger_id), slot) not in expected:
            continue
        handled[(str(trigger_id), slot)] += 1
        by_status[status] += 1
        late = (received_at - datetime.fromisoformat(slot.replace("Z", "+00:00"))).total_seconds()
        lateness.append(late)
        by_boundary.setdefault(slot, []).append(late)
    missing = sum(1 for key in expected if key not in handled)
    doubled = sum(1 for count in handled.values() if count > 1)
    per_boundary = Counter(slot for _, slot in expected)
    result = {
        "machine": machine(),
        "triggers": args.triggers,
        "mix": args.mix,
        "scheduler": args.scheduler,
        "worker_concurrency": args.concurrency,
        "sweepers": args.sweepers,
        "mirror_tasks": args.mirrors,
        "window": f"{first_slot.isoformat()} .. {end.isoformat()}",
        "scheduled_times": sum(expected.values()),
        "largest_boundary": max(per_boundary.values()) if per_boundary else 0,
        "handled": len(handled),
        "by_status": dict(by_status),
        "missing": missing,
        "handled_twice": doubled,
        "lateness_s": {
            "p50": round(statistics.median(lateness), 3) if lateness else None,
            "p95": round(percentile(lateness, 0.95), 3),
            "p99": round(percentile(lateness, 0.99), 3),
            "max": round(max(lateness), 3) if lateness else None,
            "min": round(min(lateness), 3) if lateness else None,
        },
        # Each minute boundary on its own: the first one comes right after the worker started.
        "per_boundary_s": {
            slot: {"times": len(values), "p50": round(statistics.median(values), 3),
                   "p99": round(percentile(values, 0.99), 3), "max": round(max(values), 3)}
            for slot, values in sorted(by_boundary.items())
        },
    }
    p99 = result["lateness_s"]["p99"]
    print()
    for key, value in result["machine"].items():
        print(f"  {key:<22}{value}")
    print(f"  {'triggers / mix':<22}{args.triggers} / {args.mix} (largest boundary: {result['largest_boundary']})")
    print(f"  {'beat scheduler':<22}{args.scheduler}; mirror tasks {args.mirrors}; sweepers {args.sweepers}; "
          f"worker concurrency {args.concurrency}")
    print(f"  {'scheduled times':<22}{result['scheduled_times']} (handled {result['handled']}, {dict(by_status)})")
    print(f"  {'missing / twice':<22}{missing} / {doubled}")
    late = result["lateness_s"]
    print(f"  {'lateness (s)':<22}p50 {late['p50']}  p95 {late['p95']}  p99 {late['p99']}  max {late['max']}")
    for slot, stats in result["per_boundary_s"].items():
        print(f"    {slot[11:16]} ({stats['times']:>5}){'':<7}p50 {stats['p50']}  p99 {stats['p99']}  max {stats['max']}")
    print(f"  {'goal p99 <= 2 s':<22}{'met' if p99 is not None and p99 <= GOAL_P99_S else 'NOT met'}")
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        main()
    finally:
        flush_broker()  # our messages and owner key
