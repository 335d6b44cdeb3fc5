import uuid

from django.conf import settings
from django.db import models

from .enums import ExecutionStatus, StepExecutionStatus, StepType, TriggerType
from .workflow import Workflow, WorkflowVersion


class WorkflowExecution(models.Model):
    """One run of a workflow, pinned to the version it started with."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # db_index=False on workflow and trigger: exec_workflow_created / exec_trigger_created start
    # with them and serve every lookup; one index less to update for every run started.
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="executions", db_index=False)
    version = models.ForeignKey(
        WorkflowVersion, on_delete=models.PROTECT, related_name="executions",
        help_text="The definition this run follows, whatever edits happen meanwhile.",
    )
    trigger = models.ForeignKey(
        "triggers.WorkflowTrigger", on_delete=models.SET_NULL, null=True, blank=True, related_name="executions",
        db_index=False,
    )
    trigger_type = models.CharField(max_length=10, choices=TriggerType.choices, default=TriggerType.MANUAL)
    status = models.CharField(max_length=10, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    input = models.JSONField(default=dict, blank=True, help_text="Validated inputs, defaults applied.")
    output = models.JSONField(null=True, blank=True, help_text="Output of the last step that ran.")
    error = models.JSONField(null=True, blank=True, help_text="{type, message, step, details} when FAILED.")
    metadata = models.JSONField(default=dict, blank=True, help_text="Trigger payload and context.")
    aggregate_tokens = models.JSONField(default=dict, blank=True, help_text="{input, output, total} over every model call.")
    warnings = models.JSONField(default=list, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # Both mostly NULL (webhook, schedule and event runs; first attempts): partial indexes
    # below, so a run that has neither adds no entry to them.
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False,
    )
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries", db_index=False,
        help_text="The failed execution this one retries.",
    )
    parent_execution = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children", db_index=False,
        help_text="The run whose WORKFLOW step started this one (trigger_type WORKFLOW).",
    )
    parent_step = models.ForeignKey(
        "WorkflowStepExecution", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        db_index=False, help_text="The parent's WORKFLOW step run that waits for this one.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(
        null=True, blank=True, help_text="started_at + the workflow's timeout_seconds; fixed at start."
    )
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the run was last handed to the broker (the reaper re-sends stale ones)."
    )
    event_dispatched_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When this run's platform event (execution.completed/failed) reached the EVENT triggers "
                  "listening for it; a sweep re-sends events still undelivered.",
    )
    # "Needs attention" (workflows/attention_selectors.py): a dismissed run leaves that list for good.
    attention_dismissed_at = models.DateTimeField(
        null=True, blank=True, help_text="When someone dismissed this run from the needs-attention list.",
    )
    attention_dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False,
    )

    class Meta:
        db_table = "workflow_executions"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="unique_idempotency_key_per_workflow",
            ),
        ]
        indexes = [
            models.Index(fields=["workflow", "-created_at"], name="exec_workflow_created"),
            models.Index(fields=["status", "-created_at"], name="exec_status_created"),
            models.Index(fields=["-created_at"], name="exec_created"),
            models.Index(fields=["trigger", "-created_at"], name="exec_trigger_created"),
            models.Index(fields=["started_by"], name="exec_started_by", condition=models.Q(started_by__isnull=False)),
            models.Index(fields=["retry_of"], name="exec_retry_of", condition=models.Q(retry_of__isnull=False)),
            models.Index(fields=["attention_dismissed_by"], name="exec_attention_dismissed_by",
                         condition=models.Q(attention_dismissed_by__isnull=False)),
            models.Index(fields=["parent_execution"], name="exec_parent",
                         condition=models.Q(parent_execution__isnull=False)),
            models.Index(fields=["parent_step"], name="exec_parent_step", condition=models.Q(parent_step__isnull=False)),
            # The platform-event sweep scans recent finished runs not yet dispatched.
            models.Index(fields=["completed_at"], name="exec_event_undispatched",
                         condition=models.Q(event_dispatched_at__isnull=True, completed_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} · {self.status} · {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in ExecutionStatus.finished()

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.completed_at:
            return int((self.completed_at - self.started_at).total_seconds() * 1000)
        return None


class WorkflowStepExecution(models.Model):
    """One step of one run. ``attempt`` is the fencing token of the attempt that owns it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="step_executions")
    step = models.ForeignKey(
        "workflows.WorkflowStep", on_delete=models.SET_NULL, null=True, blank=True, related_name="executions",
        help_text="The live step row, if it still exists; the run itself follows its pinned version.",
    )
    step_name = models.CharField(max_length=100)
    step_order = models.PositiveIntegerField()
    step_type = models.CharField(max_length=10, choices=StepType.choices)
    item_index = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="MAP steps: the item this row runs (0-based); empty on every step's own row.",
    )
    status = models.CharField(max_length=10, choices=StepExecutionStatus.choices, default=StepExecutionStatus.PENDING)
    input = models.JSONField(null=True, blank=True, help_text="Rendered prompt/expression and resolved variables.")
    output = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(null=True, blank=True, help_text='Multi-model steps: {"provider:model": content}.')
    error = models.JSONField(null=True, blank=True)
    retry_count = models.PositiveIntegerField(default=0, help_text="Retries made under the step's retry_config.")
    retry_config = models.JSONField(default=dict, blank=True, help_text="Snapshot of the policy this step ran with.")
    model_outputs = models.JSONField(default=list, blank=True)
    tokens = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    attempt = models.PositiveIntegerField(
        default=1, help_text="Fencing token: only the task carrying this attempt number may write the result."
    )
    lost_attempts = models.PositiveIntegerField(default=0, help_text="Attempts whose worker vanished (lease expired).")
    lease_expires_at = models.DateTimeField(null=True, blank=True, help_text="A RUNNING step whose lease passes is re-run.")
    available_at = models.DateTimeField(
        null=True, blank=True,
        help_text="PENDING: when the current attempt is due to run. WAITING: when the wait ends (a delay's "
                  "time, an approval's timeout); empty: no end.",
    )
    worker = models.CharField(max_length=200, blank=True, default="", help_text="host:pid that holds the lease.")
    reused_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="Retried runs reuse the output of steps that had completed.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    event_dispatched_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When this wait's execution.waiting event was delivered; empty while WAITING with a "
                  "listener: the event sweep sends it again.",
    )

    class Meta:
        db_table = "workflow_step_executions"
        ordering = ["execution", "step_order"]
        constraints = [
            # One row per step of a run; a MAP step's items have one row each beside it.
            models.UniqueConstraint(fields=["execution", "step_order"], name="unique_step_run_per_execution",
                                    condition=models.Q(item_index__isnull=True)),
            models.UniqueConstraint(fields=["execution", "step_order", "item_index"], name="unique_map_item_run",
                                    condition=models.Q(item_index__isnull=False)),
        ]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="stepexec_status_lease"),
            models.Index(fields=["status", "available_at"], name="stepexec_status_available"),
            models.Index(fields=["started_at"], name="stepexec_wait_undispatched",
                         condition=models.Q(status=StepExecutionStatus.WAITING, event_dispatched_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.step_order}. {self.step_name} · {self.status}"

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.completed_at:
            return int((self.completed_at - self.started_at).total_seconds() * 1000)
        return None
