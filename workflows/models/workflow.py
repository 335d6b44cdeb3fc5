from django.conf import settings
from django.db import models

from promptpilot.common.models import TimeStampedModel

from .enums import VariableType


class Workflow(TimeStampedModel):
    """An ordered list of steps with typed input variables."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflows",
        help_text="The builder who owns this workflow.",
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(
        default=True, help_text="Inactive workflows cannot be executed (execute answers 409)."
    )
    max_concurrent_executions = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="At most this many runs at once; extra runs wait PENDING in arrival order. Empty: no limit.",
    )
    concurrency_counts_waiting = models.BooleanField(
        default=False,
        help_text="Whether runs WAITING (on an approval or a delay) take one of the max_concurrent_executions "
                  "slots. Off: a waiting run frees its slot, and goes on when resumed even if the cap is reached.",
    )
    timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="A run still going this long after it started fails as Timeout (waiting time counts). "
                  "Empty: no limit.",
    )
    latest_version = models.ForeignKey(
        "WorkflowVersion", on_delete=models.SET_NULL, null=True, blank=True, editable=False, related_name="+",
        help_text="The newest version of the definition (what a preview runs). Written only by "
                  "workflow_version_create, under the workflow's row lock.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if not args and not self._state.adding and kwargs.get("update_fields") is None \
                and not kwargs.get("force_insert"):
            # NOTE: an instance read before the latest version was made must not set the
            # pointer back when saved for another change (admin, is_active...).
            deferred = self.get_deferred_fields()  # as Django's own save(): loaded fields only
            kwargs["update_fields"] = [f.name for f in self._meta.concrete_fields
                                       if not f.primary_key and f.name != "latest_version"
                                       and f.attname not in deferred]
        super().save(*args, **kwargs)


class WorkflowVariable(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="variables")
    name = models.CharField(max_length=100, help_text="An identifier: letters, digits and _, not starting with a digit.")
    type = models.CharField(max_length=10, choices=VariableType.choices, default=VariableType.STRING)
    required = models.BooleanField(default=True)
    default = models.JSONField(null=True, blank=True, help_text="Used when the input leaves the variable out.")
    sample = models.JSONField(null=True, blank=True, help_text="Example value for previews and the demo.")
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["workflow", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "name"], name="unique_variable_name_per_workflow"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


class WorkflowVersion(models.Model):
    """An immutable snapshot of a workflow's definition; executions pin one."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField(help_text="Snapshot of variables, steps and run limits.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="unique_version_number_per_workflow"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.number}"

    def save(self, *args, **kwargs):
        if self.pk and not kwargs.pop("force_snapshot_write", False):
            raise ValueError("Workflow versions are immutable; create a new version instead.")
        super().save(*args, **kwargs)
