from django.conf import settings
from django.db import models

from promptpilot.common.models import TimeStampedModel


class Prompt(TimeStampedModel):
    """A reusable prompt template that PROMPT steps can link to."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="prompts",
        help_text="The builder who owns this prompt; only they see it in the API.",
    )
    name = models.CharField(max_length=200, help_text="A name to recognise the prompt by.")
    template = models.TextField(help_text="Jinja2 template of the user message (sandboxed).")
    system = models.TextField(blank=True, default="", help_text="Optional system prompt (Jinja2).")
    model_config = models.JSONField(
        default=dict, blank=True,
        help_text='Default model for steps using this prompt, e.g. {"provider": "echo", "model": "echo"}.',
    )

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["owner", "name"])]

    def __str__(self) -> str:
        return self.name
