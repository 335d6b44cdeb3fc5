"""Chaos: two beat processes on the production scheduler at once (a second ``beat``
started by mistake, or an old one not yet stopped in a deploy), as docker-compose runs it
(``celery -A promptpilot beat``: django-celery-beat's DatabaseScheduler, triggers/beat.py),
over three slots of an every-minute schedule (two of them on the cron's own minutes)."""
from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from triggers.models import InvocationStatus, TriggerInvocation, WorkflowTrigger
from triggers.tests.helpers import create_trigger
from triggers.tests.schedules.support import iso
from workflows.models import WorkflowExecution
from workflows.tests.factories import make_workflow
from workflows.tests.support.processes import ServiceProcess, celery_argv, start_worker

from .helpers import db_wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SWEEP = "Sending due task triggers-scheduler"


def _production_beat(name: str, env: dict[str, str], log_dir) -> ServiceProcess:
    beat = ServiceProcess(name, celery_argv("beat", "-l", "info"), env, log_dir)  # docker-compose's command
    beat.wait_for_log("beat: Starting", timeout=60)
    return beat


def _exit_code_after_sigterm(process: ServiceProcess) -> int | None:
    """Stop as docker does (SIGTERM); the exit code, or None if it had to be killed."""
    process.signal_group(signal.SIGTERM)
    try:
        return process.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        return None
    finally:
        process.stop()  # SIGKILL if still running; closes its log


def _sweeps_sent(beat: ServiceProcess) -> list[datetime]:
    return [datetime.fromisoformat(record["time"]) for line in beat.log().splitlines()
            if SWEEP in line and (record := json.loads(line))]


def test_two_production_beats_over_an_every_minute_schedule_fire_each_slot_once_and_both_try(
        user, service_env, tmp_path, beat):
    workflow = make_workflow(user, steps=[{"name": "report", "type": "TRANSFORM",
                                           "config": {"template": "due {{ trigger.payload.scheduled_for }}"}}])
    beat.signal_group(signal.SIGSTOP)  # the suite's own beat stays out of it: only the two below sweep
    # Inactive until both beats run: no slot of the cron fires while they start.
    trigger, _ = create_trigger(workflow, "SCHEDULED", name="Every minute", config={"cron": "* * * * *"},
                                is_active=False)
    beats: list[ServiceProcess] = []
    worker = start_worker("two-beats", service_env, tmp_path)
    try:
        beats = [_production_beat(f"beat-{n}", service_env, tmp_path) for n in (1, 2)]
        # The first slot a moment from now, the next two on the cron's next minutes.
        first = timezone.now().replace(microsecond=0) + timedelta(seconds=3)
        WorkflowTrigger.objects.filter(pk=trigger.pk).update(is_active=True, next_run_at=first)
        on_the_minute = (first + timedelta(minutes=1)).replace(second=0)
        slots = [first, on_the_minute, on_the_minute + timedelta(minutes=1)]
        for slot in slots:
            db_wait_for(lambda s=slot: TriggerInvocation.objects.filter(
                trigger=trigger, delivery_id=f"schedule:{iso(s)}").exists(), 90, f"the slot {iso(slot)} to fire")
        runs = WorkflowExecution.objects.filter(trigger=trigger)
        db_wait_for(lambda: runs.filter(status="COMPLETED").count() == len(slots), 30, "the runs to complete")
        # One more sweep from each beat after the last slot: none may fire it again.
        for each in beats:
            sent = len(_sweeps_sent(each))
            db_wait_for(lambda b=each, n=sent: len(_sweeps_sent(b)) > n, 15, f"{each.name} to sweep again")
        WorkflowTrigger.objects.filter(pk=trigger.pk).update(is_active=False)
    finally:
        beat.signal_group(signal.SIGCONT)
        try:
            codes = [_exit_code_after_sigterm(each) for each in beats]
        finally:
            worker.stop()  # never left running into the next test

    invocations = TriggerInvocation.objects.filter(trigger=trigger).order_by("received_at")
    assert [(i.status, i.delivery_id) for i in invocations] == [
        (InvocationStatus.ACCEPTED, f"schedule:{iso(slot)}") for slot in slots], "exactly one run per slot"
    assert sorted(run.metadata["scheduled_for"] for run in runs) == [iso(slot) for slot in slots]
    for each in beats:
        assert "DatabaseScheduler" in each.log(), "the production scheduler"
        sent = _sweeps_sent(each)
        for slot in slots:
            assert any(slot - timedelta(seconds=2) <= at <= slot + timedelta(seconds=3) for at in sent), \
                f"{each.name} sent the schedule sweep around {iso(slot)} too"
        assert "Traceback" not in each.log()
    assert codes == [0, 0], "both beats stop cleanly on SIGTERM"
