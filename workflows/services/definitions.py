"""Workflow definitions: snapshots and versions.

Every change to a workflow's definition goes through ``workflow_version_create`` so that
a new immutable WorkflowVersion exists before any execution can start on it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.db import connection, transaction

from promptpilot.common.db import concrete_fields, instance_from_row, run_prepared

from ..models import Workflow, WorkflowVersion


def workflow_definition_snapshot(*, workflow: Workflow) -> dict[str, Any]:
    """The definition as the engine will run it, prompts resolved into each step."""
    variables = [
        {
            "name": v.name,
            "type": v.type,
            "required": v.required,
            "default": v.default,
            "sample": v.sample,
            "description": v.description,
        }
        for v in workflow.variables.order_by("id")
    ]
    steps = []
    for s in workflow.steps.select_related("prompt").order_by("order"):
        prompt = None
        if s.prompt_id:
            prompt = {
                "id": s.prompt.id,
                "name": s.prompt.name,
                "template": s.prompt.template,
                "system": s.prompt.system,
                "model_config": s.prompt.model_config,
            }
        steps.append(
            {
                "id": s.id,
                "name": s.name,
                "order": s.order,
                "type": s.type,
                "config": s.config,
                "retry_config": s.retry_config,
                "on_error": s.on_error,
                "timeout_seconds": s.timeout_seconds,
                "prompt": prompt,
            }
        )
    return {
        "workflow": {
            "name": workflow.name,
            "timeout_seconds": workflow.timeout_seconds,
            "max_concurrent_executions": workflow.max_concurrent_executions,
        },
        "variables": variables,
        "steps": steps,
    }


def _comparable(definition: dict[str, Any]) -> dict[str, Any]:
    """Step ids change when steps are re-created; they are not part of the meaning."""
    steps = [{k: v for k, v in s.items() if k != "id"} for s in definition.get("steps", [])]
    return {**definition, "steps": steps}


@transaction.atomic
def workflow_version_create(*, workflow: Workflow, user=None, note: str = "", force: bool = False) -> WorkflowVersion:
    """Snapshot the workflow as a new version, unless the latest already matches it, and
    point ``workflow.latest_version`` at the result (on the row and on this instance)."""
    pointer = (Workflow.objects.select_for_update().filter(pk=workflow.pk).order_by("pk")  # serialise numbering
               .values_list("latest_version_id", flat=True).first())
    snapshot = workflow_definition_snapshot(workflow=workflow)
    latest = workflow.versions.order_by("-number").first()
    if latest and not force and _comparable(latest.definition) == _comparable(snapshot):
        version = latest
    else:
        number = (latest.number + 1) if latest else 1
        version = WorkflowVersion.objects.create(
            workflow=workflow, number=number, definition=snapshot, created_by=user, note=note
        )
    if pointer != version.pk:
        Workflow.objects.filter(pk=workflow.pk).update(latest_version=version)
    workflow.latest_version = version
    return version


def workflow_current_version(*, workflow: Workflow) -> WorkflowVersion:
    """The version a new execution pins: the latest one (made now if there is none), with
    only its id, workflow and number loaded (the definition loads on access).

    Every service that changes a definition (API, admin, restore, prompt edits) snapshots
    it with ``workflow_version_create``, which moves the workflow's ``latest_version``
    pointer; starts only follow the pointer, from the database (the caller's instance may
    be older than the latest edit), in one prepared statement: starts are the API's and
    webhooks' hot path. Re-snapshotting here would lock the workflow row on every start
    and serialise all runs of a workflow (bench/webhooks.py).
    """
    sql, fields = _latest_version_query()
    row = run_prepared(sql, [workflow.pk], fetch=True, read_only=True)
    if row is None:
        return workflow_version_create(workflow=workflow)
    return instance_from_row(transaction.get_connection(), WorkflowVersion, fields, row)


@lru_cache(maxsize=1)
def _latest_version_query() -> tuple[str, list]:
    quote = connection.ops.quote_name
    version, workflow = WorkflowVersion._meta, Workflow._meta
    fields = concrete_fields(WorkflowVersion, ("id", "workflow", "number"))
    columns = ", ".join(f"v.{quote(f.column)}" for f in fields)
    return (f"SELECT {columns} FROM {quote(workflow.db_table)} w JOIN {quote(version.db_table)} v "
            f"ON v.{quote(version.pk.column)} = w.{quote(workflow.get_field('latest_version').column)} "
            f"WHERE w.{quote(workflow.pk.column)} = %s"), fields


@lru_cache(maxsize=1024)
def workflow_version_variables(*, version_id: int) -> tuple[dict[str, Any], ...]:
    """The variables of a version's definition. Versions are immutable, so each process
    reads a definition once, not on every start (starts are the webhook hot path)."""
    definition = WorkflowVersion.objects.values_list("definition", flat=True).get(pk=version_id)
    return tuple(definition.get("variables", []))
