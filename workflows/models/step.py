from django.db import models

from .enums import StepType
from .workflow import Workflow


class WorkflowStep(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100, help_text="An identifier, unique in the workflow; templates use steps.<name>.output.")
    order = models.PositiveIntegerField(help_text="Steps run by ascending order; unique in the workflow.")
    type = models.CharField(max_length=10, choices=StepType.choices)
    prompt = models.ForeignKey(
        "workflows.Prompt", on_delete=models.PROTECT, null=True, blank=True, related_name="steps",
        help_text="PROMPT steps may take their template, system prompt and model from a saved prompt.",
    )
    config = models.JSONField(default=dict, blank=True, help_text="Step type specific settings (see docs/WORKFLOW_ENGINE.md).")
    retry_config = models.JSONField(
        default=dict, blank=True,
        help_text='e.g. {"max_retries": 2, "backoff_base_seconds": 1, "backoff_max_seconds": 60, "jitter": true, "retry_on": ["transient"]}',
    )
    on_error = models.CharField(
        max_length=120, default="fail",
        help_text='"fail" (default), "continue" (use config.default_output) or "skip_to:<step name>".',
    )
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Per attempt; default 120 s for model calls.")

    class Meta:
        ordering = ["workflow", "order"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "name"], name="unique_step_name_per_workflow"),
            models.UniqueConstraint(fields=["workflow", "order"], name="unique_step_order_per_workflow"),
        ]

    def __str__(self) -> str:
        return f"{self.order}. {self.name} ({self.type})"
