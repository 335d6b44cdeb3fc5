"""Triggers start executions. The core issue ships the models; firing lands with the triggers issue."""
import uuid

from django.db import models


class TriggerKind(models.TextChoices):
    MANUAL = "MANUAL", "Manual"
    SCHEDULED = "SCHEDULED", "Scheduled (cron)"
    WEBHOOK = "WEBHOOK", "Webhook"
    API = "API", "API key"
    EVENT = "EVENT", "Platform event"


class WorkflowTrigger(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey("workflows.Workflow", on_delete=models.CASCADE, related_name="triggers")
    type = models.CharField(max_length=10, choices=TriggerKind.choices)
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    config = models.JSONField(default=dict, blank=True, help_text="Type specific settings (cron, event filter, ...).")
    last_triggered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


class TriggerInvocation(models.Model):
    """Every delivery or firing of a trigger, recorded before any work is queued."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    trigger = models.ForeignKey(WorkflowTrigger, on_delete=models.CASCADE, related_name="invocations")
    received_at = models.DateTimeField(auto_now_add=True)
    verified = models.BooleanField(default=False)
    verification_error = models.TextField(blank=True, default="")
    delivery_id = models.CharField(max_length=255, null=True, blank=True)
    payload = models.JSONField(null=True, blank=True)
    execution = models.ForeignKey(
        "workflows.WorkflowExecution", on_delete=models.SET_NULL, null=True, blank=True, related_name="invocations"
    )

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["trigger", "delivery_id"], condition=models.Q(delivery_id__isnull=False),
                name="unique_delivery_per_trigger",
            ),
        ]
