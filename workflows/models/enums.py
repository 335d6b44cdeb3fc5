from django.db import models


class VariableType(models.TextChoices):
    STRING = "STRING", "String"
    NUMBER = "NUMBER", "Number"
    BOOLEAN = "BOOLEAN", "Boolean"
    JSON = "JSON", "JSON"


class StepType(models.TextChoices):
    PROMPT = "PROMPT", "Prompt (model call)"
    CONDITION = "CONDITION", "Condition (branch)"
    TRANSFORM = "TRANSFORM", "Transform (template, no model call)"
    HTTP = "HTTP", "HTTP request (outside API)"
    APPROVAL = "APPROVAL", "Approval (waits for a person)"
    DELAY = "DELAY", "Delay (durable timer)"
    WORKFLOW = "WORKFLOW", "Workflow (child run)"
    MAP = "MAP", "Map (one inner step per list item, in parallel)"


class TriggerType(models.TextChoices):
    MANUAL = "MANUAL", "Manual"
    SCHEDULED = "SCHEDULED", "Scheduled"
    WEBHOOK = "WEBHOOK", "Webhook"
    API = "API", "API"
    EVENT = "EVENT", "Event"
    RETRY = "RETRY", "Retry"
    WORKFLOW = "WORKFLOW", "Workflow step (child run)"


class ExecutionStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    WAITING = "WAITING", "Waiting"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"

    @classmethod
    def finished(cls) -> tuple[str, ...]:
        return (cls.COMPLETED, cls.FAILED, cls.CANCELLED)


class StepExecutionStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    WAITING = "WAITING", "Waiting"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    SKIPPED = "SKIPPED", "Skipped"
    CANCELLED = "CANCELLED", "Cancelled"
