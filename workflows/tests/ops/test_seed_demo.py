"""``manage.py seed_demo``: the demo user and workflow, safe to run again."""
from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from workflows.management.commands.seed_demo import APPROVAL_WORKFLOW_NAME, DEMO_WORKFLOW_NAME
from workflows.models import Prompt, StepType, Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_password(settings):
    def set_password(value: str) -> None:
        settings.PROMPTPILOT = {**settings.PROMPTPILOT, "DEMO_PASSWORD": value}

    return set_password


def seed(**options) -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def test_seed_creates_staff_demo_user_with_configured_password(demo_password):
    demo_password("demo-pass-123")
    out = seed()
    user = get_user_model().objects.get(username="demo")
    assert user.is_staff and user.is_superuser and user.is_active
    assert user.check_password("demo-pass-123")
    assert "Demo password: demo-pass-123" in out


def test_seed_generates_and_prints_a_password_when_none_is_configured(demo_password):
    demo_password("")
    out = seed()
    printed = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Demo password: "))
    assert len(printed) >= 12
    assert get_user_model().objects.get(username="demo").check_password(printed)


def test_seed_builds_the_demo_workflow_with_echo_steps_and_a_version(demo_password):
    demo_password("demo-pass-123")
    out = seed(base_url="http://127.0.0.1:9999")
    workflow = Workflow.objects.get(name=DEMO_WORKFLOW_NAME)
    assert workflow.owner.username == "demo" and workflow.is_active

    variables = {v.name: v for v in workflow.variables.all()}
    assert variables["topic"].type == "STRING" and variables["topic"].sample == "durable execution"
    assert variables["audience"].default == "engineers" and not variables["audience"].required

    steps = list(workflow.steps.order_by("order"))
    assert [s.type for s in steps] == [StepType.PROMPT, StepType.CONDITION, StepType.TRANSFORM]
    draft, check, classify = steps
    assert draft.config["model"] == {"provider": "echo", "model": "echo"}
    assert "{{ input.topic }}" in draft.config["template"]
    assert check.config == {"expression": "steps.draft.output | length > 0", "if_true": "continue", "if_false": "stop"}
    assert "{{ steps.draft.output }}" in classify.config["template"]

    version = workflow.versions.get()
    assert [s["name"] for s in version.definition["steps"]] == ["draft", "check", "classify"]
    from workflows.engine.runner import validate_definition

    assert validate_definition(version.definition["steps"], version.definition["variables"]) == {}
    assert Prompt.objects.filter(owner=workflow.owner).count() == 1

    assert f"id {workflow.id}" in out
    assert f"http://127.0.0.1:9999/api/workflows/{workflow.id}/execute" in out
    assert "http://127.0.0.1:9999/api/auth/token/" in out and "/api/executions/" in out


def test_seed_twice_reuses_everything_and_keeps_the_password(demo_password):
    demo_password("first-pass-123")
    seed()
    demo_password("")
    out = seed()
    User = get_user_model()
    assert User.objects.filter(username="demo").count() == 1
    assert User.objects.get(username="demo").check_password("first-pass-123")
    assert "existing password unchanged" in out and "Demo password:" not in out
    assert Workflow.objects.filter(name=DEMO_WORKFLOW_NAME).count() == 1
    assert Workflow.objects.filter(name=APPROVAL_WORKFLOW_NAME).count() == 1
    assert WorkflowVersion.objects.count() == 2  # one per workflow: nothing changed the second time
    assert Prompt.objects.count() == 1


def test_seed_resets_the_password_when_one_is_configured(demo_password):
    demo_password("first-pass-123")
    seed()
    demo_password("second-pass-456")
    out = seed()
    assert get_user_model().objects.get(username="demo").check_password("second-pass-456")
    assert "reset" in out


def test_seed_builds_a_demo_workflow_that_waits_for_an_approval(demo_password):
    demo_password("demo-pass-123")
    out = seed(base_url="http://127.0.0.1:9999")
    workflow = Workflow.objects.get(name=APPROVAL_WORKFLOW_NAME)
    version = workflow.versions.get()
    assert [s["type"] for s in version.definition["steps"]] == ["PROMPT", "APPROVAL", "CONDITION", "TRANSFORM"]
    from workflows.services.definition_check import definition_check

    check = definition_check(steps=version.definition["steps"], variables=version.definition["variables"])
    assert check.ok, check.errors
    assert "http://127.0.0.1:9999/executions/awaiting-approval/" in out
