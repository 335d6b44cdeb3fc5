"""The suite's own isolation (conftest.py): the flush that ends every transactional test
deletes only the tables with rows, and must leave the database as Django's flush of every
table does: nothing left of the test, the content types and permissions recreated, the
sequences not reset."""
from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command

from workflows.models import Workflow, WorkflowStep, WorkflowVersion
from workflows.tests.factories import make_workflow

pytestmark = pytest.mark.django_db(transaction=True)

RECREATED_BY_POST_MIGRATE = {ContentType, Permission}


def _teardown_flush() -> None:
    """The call TransactionTestCase._fixture_teardown makes."""
    call_command("flush", verbosity=0, interactive=False, database="default", reset_sequences=False,
                 allow_cascade=False, inhibit_post_migrate=False)


def test_the_flush_leaves_every_table_empty_but_what_post_migrate_recreates(django_user_model):
    owner = django_user_model.objects.create_user(username="owner", password="pw-owner-123")
    # Rows referencing each other (step -> workflow -> user): the deletes' order must not matter.
    make_workflow(owner, steps=[{"name": "only", "type": "TRANSFORM", "config": {"template": "x"}}])
    ContentType.objects.create(app_label="elsewhere", model="leftover")
    assert WorkflowStep.objects.exists() and WorkflowVersion.objects.exists()

    _teardown_flush()

    left = {model._meta.db_table: model._default_manager.count()
            for model in apps.get_models(include_auto_created=True)
            if model not in RECREATED_BY_POST_MIGRATE and model._meta.managed and not model._meta.proxy}
    assert {table: count for table, count in left.items() if count} == {}
    assert not ContentType.objects.filter(app_label="elsewhere").exists(), "a row the test added survived"
    workflow_type = ContentType.objects.get_for_model(Workflow)
    assert Permission.objects.filter(content_type=workflow_type, codename="add_workflow").exists()


def test_the_flush_does_not_reset_the_sequences(django_user_model):
    first = django_user_model.objects.create_user(username="first", password="pw-first-123")
    _teardown_flush()
    second = django_user_model.objects.create_user(username="second", password="pw-second-123")
    assert second.pk > first.pk  # as after Django's own teardown flush (reset_sequences=False)
