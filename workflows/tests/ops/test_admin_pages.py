"""Admin for ops staff: links to the pages, times to the second, PromptPilot's sections first."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db


def test_the_execution_admin_links_to_the_execution_page(admin_client, ops_world):
    run = ops_world.completed
    page = f"/executions/{run.pk}/"
    assert page in admin_client.get(reverse("admin:workflows_workflowexecution_changelist")).content.decode()
    assert page in admin_client.get(
        reverse("admin:workflows_workflowexecution_change", args=[run.pk])).content.decode()


def test_the_workflow_admin_links_to_the_workflow_and_preview_pages(admin_client, ops_world):
    workflow = ops_world.workflow
    html = admin_client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk])).content.decode()
    assert f'href="/workflows/{workflow.pk}/preview"' in html and f'href="/workflows/{workflow.pk}/"' in html


def test_admin_times_are_shown_to_the_second(admin_client, ops_world):
    run = ops_world.completed
    WorkflowExecution.objects.filter(pk=run.pk).update(
        created_at=timezone.make_aware(timezone.datetime(2026, 3, 4, 5, 6, 7)))
    html = admin_client.get(reverse("admin:workflows_workflowexecution_change", args=[run.pk])).content.decode()
    local = timezone.localtime(WorkflowExecution.objects.get(pk=run.pk).created_at)
    assert local.strftime("%H:%M:%S") in html, "created_at is not shown to the second"


def test_promptpilot_sections_come_first_on_the_admin_index(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    order = re.findall(r'class="app-(\w+) module', html)
    assert order[:3] == ["workflows", "triggers", "providers"], order
    assert "auth" in order[3:]
