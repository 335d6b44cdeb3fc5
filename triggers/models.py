"""Triggers start executions of one workflow; every firing is recorded as an invocation.

Secrets never live here in clear: a webhook secret is stored encrypted
(``secret_encrypted``, see ``services/secrets.py``), an API key only as its prefix and
SHA-256 hash (see ``services/api_keys.py``).
"""
import uuid

from django.conf import settings
from django.db import models


class TriggerKind(models.TextChoices):
    """What starts the runs. The same values as ``workflows.models.TriggerType`` less
    ``RETRY`` (a retry is not a trigger); a test keeps the two in sync."""

    MANUAL = "MANUAL", "Manual"
    SCHEDULED = "SCHEDULED", "Scheduled (cron)"
    WEBHOOK = "WEBHOOK", "Webhook"
    API = "API", "API key"
    EVENT = "EVENT", "Platform event"


class InvocationStatus(models.TextChoices):
    ACCEPTED = "ACCEPTED", "Accepted (execution started)"
    DUPLICATE = "DUPLICATE", "Duplicate (delivery id already accepted)"
    REJECTED = "REJECTED", "Rejected (verification or request failed)"
    INVALID_INPUT = "INVALID_INPUT", "Invalid input (the workflow's variables refused it)"
    SKIPPED = "SKIPPED", "Skipped (schedule overlap policy: the previous run was still going)"


class WorkflowTrigger(models.Model):
    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, editable=False,
        help_text="Opaque and unguessable; also the path of a webhook: /api/webhooks/{id}.",
    )
    workflow = models.ForeignKey(
        "workflows.Workflow", on_delete=models.CASCADE, related_name="triggers",
        help_text="The workflow this trigger starts.",
    )
    type = models.CharField(
        max_length=10, choices=TriggerKind.choices, help_text="Fixed at creation; create a new trigger to change it."
    )
    name = models.CharField(max_length=200, help_text="A label for people.")
    is_active = models.BooleanField(
        default=True, help_text="Inactive triggers start nothing (webhook and API-key calls answer 404)."
    )
    config = models.JSONField(
        default=dict, blank=True,
        help_text="Type specific settings: WEBHOOK {input_mapping}, API {rate_limit}, SCHEDULED {cron, timezone, "
                  "input}, EVENT {event, filter}. Never holds secrets.",
    )
    secret_encrypted = models.TextField(
        blank=True, default="",
        help_text="WEBHOOK: the whsec_ signing secret, Fernet-encrypted with PROMPTPILOT_SECRETS_KEY.",
    )
    previous_secret_encrypted = models.TextField(
        blank=True, default="",
        help_text="WEBHOOK: the secret before the last rotation, still accepted until previous_secret_expires_at.",
    )
    previous_secret_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="WEBHOOK: end of the grace period of the previous secret (null: none)."
    )
    api_key_prefix = models.CharField(
        max_length=16, blank=True, default="", db_index=True,
        help_text="API: the first characters of the key, to recognise it; the key itself is never stored.",
    )
    api_key_hash = models.CharField(
        max_length=64, blank=True, default="", help_text="API: SHA-256 (hex) of the whole key."
    )
    last_triggered_at = models.DateTimeField(null=True, blank=True, help_text="When it last started an execution.")
    # SCHEDULED only (see services/schedules.py and docs/TRIGGERS.md "SCHEDULED").
    next_run_at = models.DateTimeField(
        null=True, blank=True, verbose_name="next run at",
        help_text="SCHEDULED: the next scheduled time (UTC) the scheduler will fire; null while inactive.",
    )
    buffered_slot_at = models.DateTimeField(
        null=True, blank=True, verbose_name="buffered run for",
        help_text="SCHEDULED with overlap buffer_one: the scheduled time of the one run waiting for the current "
                  "run to end.",
    )
    consecutive_failures = models.PositiveIntegerField(
        default=0, help_text="SCHEDULED: scheduled runs that ended FAILED in a row (reset by a COMPLETED run or "
                             "by re-enabling).",
    )
    paused_at = models.DateTimeField(
        null=True, blank=True,
        help_text="SCHEDULED: when the scheduler disabled the trigger (pause_after_failures, or a schedule that "
                  "cannot be computed); null: not paused.",
    )
    paused_reason = models.TextField(
        blank=True, default="", help_text="SCHEDULED: why the trigger was paused; cleared by re-enabling it."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workflow", "-created_at"], name="trigger_workflow_created"),
            # The scheduler's "what is due" query reads only active schedules.
            models.Index(fields=["next_run_at"], name="trigger_schedule_due",
                         condition=models.Q(type="SCHEDULED", is_active=True)),
            # ... and its backstop for buffer_one runs: rows with a waiting run only (usually none).
            models.Index(fields=["buffered_slot_at"], name="trigger_schedule_buffered",
                         condition=models.Q(buffered_slot_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


class TriggerInvocation(models.Model):
    """Every delivery or firing of a trigger, recorded before any work is queued."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False, help_text="Returned as invocation_id.")
    trigger = models.ForeignKey(  # indexed by invocation_trigger_received, which starts with it
        WorkflowTrigger, on_delete=models.CASCADE, related_name="invocations", help_text="The trigger that fired.",
        db_index=False,
    )
    received_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(
        max_length=16, choices=InvocationStatus.choices, default=InvocationStatus.ACCEPTED,
        help_text="What became of the firing.",
    )
    verified = models.BooleanField(default=False, help_text="Whether the signature / key / owner check passed.")
    verification_error = models.TextField(blank=True, default="", help_text="Why the verification failed.")
    error = models.TextField(blank=True, default="", help_text="Why no execution started (invalid input, bad body...).")
    delivery_id = models.CharField(
        max_length=255, null=True, blank=True,
        help_text="Idempotency key of an accepted firing (webhook-id, Idempotency-Key). Only ACCEPTED invocations "
                  "hold it, so a rejected delivery can be retried with the same id.",
    )
    payload = models.JSONField(
        null=True, blank=True, help_text="The verified body (trigger.payload in templates); null when not verified."
    )
    request_meta = models.JSONField(
        default=dict, blank=True,
        help_text="What the request claimed (webhook-id, webhook-timestamp, content type, size, body SHA-256).",
    )
    execution = models.ForeignKey(
        "workflows.WorkflowExecution", on_delete=models.SET_NULL, null=True, blank=True, related_name="invocations",
        help_text="The run it started (for DUPLICATE: the run of the first delivery).",
    )
    # "Needs attention" (workflows/attention_selectors.py): a dismissed rejection leaves that list.
    attention_dismissed_at = models.DateTimeField(
        null=True, blank=True, help_text="When someone dismissed this rejected delivery from the needs-attention list.",
    )
    attention_dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False,
    )

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["trigger", "delivery_id"], condition=models.Q(delivery_id__isnull=False),
                name="unique_delivery_per_trigger",
            ),
        ]
        indexes = [
            models.Index(fields=["trigger", "-received_at"], name="invocation_trigger_received"),
            # The needs-attention count (every page's nav) reads only rejected, undismissed rows.
            models.Index(fields=["-received_at"], name="invocation_needs_attention",
                         condition=models.Q(status__in=["REJECTED", "INVALID_INPUT"],
                                            attention_dismissed_at__isnull=True)),
            # Deleting a user nulls their dismissals: a partial index, as few rows are dismissed.
            models.Index(fields=["attention_dismissed_by"], name="invocation_dismissed_by",
                         condition=models.Q(attention_dismissed_by__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.status} · {self.id}"
