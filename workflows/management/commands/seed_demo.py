"""``manage.py seed_demo``: the demo user, a demo prompt, the demo workflow and a demo
workflow that waits for an approval.

Idempotent: a second run reuses what exists (and keeps the demo user's password
unless PROMPTPILOT_DEMO_PASSWORD is set), so ``make run`` can call it every time.
"""
from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from workflows.models import Prompt, StepType, VariableType, Workflow, WorkflowStep, WorkflowVariable
from workflows.services.definitions import workflow_version_create

DEMO_USERNAME = "demo"
DEMO_PROMPT_NAME = "Demo: short summary"
DEMO_WORKFLOW_NAME = "Demo: summarise and classify"
APPROVAL_WORKFLOW_NAME = "Demo: approve before publishing"
ECHO_MODEL = {"provider": "echo", "model": "echo"}

DEMO_VARIABLES: list[dict[str, Any]] = [
    {
        "name": "topic",
        "type": VariableType.STRING,
        "required": True,
        "default": None,
        "sample": "durable execution",
        "description": "What to summarise.",
    },
    {
        "name": "audience",
        "type": VariableType.STRING,
        "required": False,
        "default": "engineers",
        "sample": "engineers",
        "description": "Who the summary is for.",
    },
]

# The echo provider answers with the rendered prompt, so every run is offline and its
# output predictable: the demo shows the plumbing, not a model's prose.
DEMO_STEPS: list[dict[str, Any]] = [
    {
        "name": "draft",
        "order": 1,
        "type": StepType.PROMPT,
        "config": {
            "template": "Write a three-sentence summary of {{ input.topic }} for {{ input.audience }}.",
            "system": "You are a concise technical writer.",
            "model": ECHO_MODEL,
            "output_format": "text",
        },
        "retry_config": {
            "max_retries": 2,
            "backoff_base_seconds": 1,
            "backoff_max_seconds": 10,
            "jitter": True,
            "retry_on": ["transient"],
        },
    },
    {
        "name": "check",
        "order": 2,
        "type": StepType.CONDITION,
        "config": {"expression": "steps.draft.output | length > 0", "if_true": "continue", "if_false": "stop"},
    },
    {
        "name": "classify",
        "order": 3,
        "type": StepType.TRANSFORM,
        "config": {
            "template": (
                "Summary for {{ input.audience }}: {{ steps.draft.output }}\n"
                "Category: {% if (steps.draft.output | wordcount) > 50 %}long read{% else %}short read{% endif %}"
            ),
            "output_format": "text",
        },
    },
]


# A run of this one stops WAITING at "review" until its owner approves or rejects it (the
# execution page, POST /api/executions/{id}/approve, or the one-use link); a rejection ends it.
APPROVAL_STEPS: list[dict[str, Any]] = [
    {
        "name": "draft",
        "order": 1,
        "type": StepType.PROMPT,
        "config": {"template": "Announce {{ input.topic }} to {{ input.audience }} in two sentences.",
                   "model": ECHO_MODEL, "output_format": "text"},
    },
    {
        "name": "review",
        "order": 2,
        "type": StepType.APPROVAL,
        "config": {
            "message": "Publish this announcement?\n\n{{ steps.draft.output }}",
            "form": [{"name": "channel", "type": "STRING", "required": False}],
            "timeout_seconds": 86400,
            "on_timeout": "reject",
        },
    },
    {
        "name": "approved",
        "order": 3,
        "type": StepType.CONDITION,
        "config": {"expression": "steps.review.output.approved", "if_true": "continue", "if_false": "stop"},
    },
    {
        "name": "publish",
        "order": 4,
        "type": StepType.TRANSFORM,
        "config": {"template": "Published on {{ steps.review.output.data.channel or 'the blog' }} "
                               "(approved by {{ steps.review.output.decided_by }}): {{ steps.draft.output }}",
                   "output_format": "text"},
    },
]


class Command(BaseCommand):
    help = "Create the demo user, a demo prompt and the demo workflow (safe to run again)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Where the web server answers (for the curl hint)."
        )

    def handle(self, *args: Any, base_url: str, **options: Any) -> None:
        with transaction.atomic():
            user, password, password_note = self._demo_user()
            self._demo_prompt(user)
            workflow, created = self._demo_workflow(user)
            version = workflow_version_create(workflow=workflow, user=user, note="seeded by seed_demo")
            approval, approval_created = self._approval_workflow(user)
            workflow_version_create(workflow=approval, user=user, note="seeded by seed_demo")

        self.stdout.write(self.style.SUCCESS(f"Demo user: {DEMO_USERNAME} ({password_note})"))
        if password:
            self.stdout.write(f"Demo password: {password}")
        verb = "created" if created else "already there, left as it is"
        self.stdout.write(
            self.style.SUCCESS(f'Demo workflow "{workflow.name}" {verb}: id {workflow.id}, version {version.number}')
        )
        verb = "created" if approval_created else "already there"
        self.stdout.write(self.style.SUCCESS(
            f'Demo workflow "{approval.name}" {verb}: id {approval.id}; its runs wait for you at '
            f"{base_url.rstrip('/')}/executions/awaiting-approval/"))
        self.stdout.write(f"Admin: {base_url.rstrip('/')}/admin/ (log in as {DEMO_USERNAME})")
        self.stdout.write(self._curl_hint(base_url.rstrip("/"), workflow.id, password))

    # -- pieces

    def _demo_user(self):
        """The demo user, staff and superuser; returns (user, password to show or None, note)."""
        User = get_user_model()
        configured = settings.PROMPTPILOT.get("DEMO_PASSWORD") or ""
        user, created = User.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"email": "demo@example.com", "first_name": "Demo"}
        )
        password: str | None = None
        if created:
            password = configured or secrets.token_urlsafe(12)
            note = "created; password from PROMPTPILOT_DEMO_PASSWORD" if configured else "created; generated password"
        elif configured:
            password = configured
            note = "exists; password reset from PROMPTPILOT_DEMO_PASSWORD"
        else:
            note = "exists; existing password unchanged, set PROMPTPILOT_DEMO_PASSWORD to reset it"
        if password:
            user.set_password(password)
        user.is_active = user.is_staff = user.is_superuser = True
        user.save()
        return user, password, note

    def _demo_prompt(self, user) -> Prompt:
        prompt, _ = Prompt.objects.get_or_create(
            owner=user,
            name=DEMO_PROMPT_NAME,
            defaults={
                "template": "Summarise {{ input.topic }} in one paragraph for {{ input.audience }}.",
                "system": "You are a concise technical writer.",
                "model_config": ECHO_MODEL,
            },
        )
        return prompt

    def _demo_workflow(self, user) -> tuple[Workflow, bool]:
        workflow = Workflow.objects.filter(owner=user, name=DEMO_WORKFLOW_NAME).order_by("id").first()
        if workflow is not None:
            return workflow, False
        workflow = Workflow.objects.create(
            owner=user,
            name=DEMO_WORKFLOW_NAME,
            description="Drafts a summary with the offline echo provider, checks it, then labels it.",
            timeout_seconds=300,
        )
        for variable in DEMO_VARIABLES:
            WorkflowVariable.objects.create(workflow=workflow, **variable)
        for step in DEMO_STEPS:
            WorkflowStep.objects.create(workflow=workflow, **step)
        return workflow, True

    def _approval_workflow(self, user) -> tuple[Workflow, bool]:
        workflow = Workflow.objects.filter(owner=user, name=APPROVAL_WORKFLOW_NAME).order_by("id").first()
        if workflow is not None:
            return workflow, False
        workflow = Workflow.objects.create(
            owner=user, name=APPROVAL_WORKFLOW_NAME,
            description="Drafts an announcement, then waits (holding no worker) until you approve or reject it.",
        )
        for variable in DEMO_VARIABLES:
            WorkflowVariable.objects.create(workflow=workflow, **variable)
        for step in APPROVAL_STEPS:
            WorkflowStep.objects.create(workflow=workflow, **step)
        return workflow, True

    def _curl_hint(self, base_url: str, workflow_id: int, password: str | None) -> str:
        shown = password or "<the demo password>"
        return f"""
Try it: get a token, start a run, poll it until it finishes.

  TOKEN=$(curl -s -X POST {base_url}/api/auth/token/ -H 'Content-Type: application/json' \\
      -d '{{"username": "{DEMO_USERNAME}", "password": "{shown}"}}' \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  EXECUTION=$(curl -s -X POST {base_url}/api/workflows/{workflow_id}/execute \\
      -H "Authorization: Token $TOKEN" -H 'Content-Type: application/json' \\
      -d '{{"input": {{"topic": "durable execution"}}}}' \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for i in $(seq 60); do
    STATUS=$(curl -s {base_url}/api/executions/$EXECUTION/ -H "Authorization: Token $TOKEN" \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    echo "$STATUS"; case "$STATUS" in COMPLETED|FAILED|CANCELLED) break;; esac; sleep 1
  done
  curl -s {base_url}/api/executions/$EXECUTION/ -H "Authorization: Token $TOKEN" | python3 -m json.tool
"""
