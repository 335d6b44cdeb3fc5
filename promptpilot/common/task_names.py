"""Every Celery task's name, in one place: the tasks register under these, and senders,
beat's schedule and benchmarks refer to them (a renamed task cannot leave a sender behind)."""

ADVANCE_EXECUTION = "workflows.advance_execution"
ADVANCE_EXECUTIONS = "workflows.advance_executions"
RUN_STEP = "workflows.run_step"
RESUME_WAIT = "workflows.resume_wait"
REAP = "workflows.reap"

FIRE_DUE_SCHEDULES = "triggers.fire_due_schedules"
FIRE_SCHEDULE = "triggers.fire_schedule"
DISPATCH_EVENT = "triggers.dispatch_event"
DISPATCH_WAITING_EVENT = "triggers.dispatch_waiting_event"
REDELIVER_EVENTS = "triggers.redeliver_events"
