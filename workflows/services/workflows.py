"""Writes to workflow definitions and prompts; previews of a saved definition.

Every definition change is validated as a whole before anything is written, written in
one transaction, and snapshotted by ``workflow_version_create`` so runs can pin it.
"""
from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction

from promptpilot.common.errors import Conflict, ValidationFailed

from ..engine.templating import validate_template
from ..errors import DefinitionInvalid
from ..models import ExecutionStatus, Prompt, Workflow, WorkflowStep, WorkflowVariable, WorkflowVersion
from ..selectors import workflow_version_get
from .definition_check import DefinitionCheck, definition_check
from .definitions import workflow_definition_snapshot, workflow_version_create

logger = logging.getLogger(__name__)

WORKFLOW_FIELDS = ("name", "description", "is_active", "max_concurrent_executions", "concurrency_counts_waiting",
                   "timeout_seconds")
PROMPT_FIELDS = ("name", "template", "system", "model_config")


class PromptInUse(Conflict):
    code = "prompt_in_use"


class WorkflowBusy(Conflict):
    code = "workflow_has_active_executions"


class ConcurrentChange(Conflict):
    code = "concurrent_change"


def _concurrent_change(exc: IntegrityError) -> ConcurrentChange:
    # Validation already enforced every uniqueness rule, so a constraint that still
    # fails means another request changed the same workflow at the same moment.
    logger.warning("workflow.write_conflict", exc_info=exc)
    return ConcurrentChange("The workflow was changed by another request at the same moment; reload it and try again.")


# --- validation helpers ------------------------------------------------------------

def _add(errors: dict[str, list[str]], path: str, message: str) -> None:
    messages = errors.setdefault(path, [])
    if message not in messages:
        messages.append(message)


def _raise_if_errors(errors: dict[str, list[str]], what: str = "The workflow definition is invalid") -> None:
    if not errors:
        return
    errors = {path: list(messages) if isinstance(messages, (list, tuple)) else [str(messages)]
              for path, messages in errors.items()}
    path, messages = next(iter(errors.items()))
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''}: see extra.errors)" if more else ""
    raise DefinitionInvalid(f"{what}: {path}: {messages[0]}{tail}", {"errors": errors})


def _check_positive(data: dict[str, Any], errors: dict[str, list[str]]) -> None:
    for field in ("max_concurrent_executions", "timeout_seconds"):
        value = data.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _add(errors, field, "Must be a positive whole number, or null for no limit.")


def _normalise_variable(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": raw.get("name"),
        "type": raw.get("type") or "STRING",
        "required": bool(raw.get("required", True)),
        "default": raw.get("default"),
        "sample": raw.get("sample"),
        "description": raw.get("description") or "",
    }


def _normalise_step(raw: dict[str, Any], position: int) -> dict[str, Any]:
    order = raw.get("order")
    return {
        "name": raw.get("name"),
        "order": position if order is None else order,
        "type": raw.get("type"),
        "prompt": raw.get("prompt"),
        "config": raw.get("config") or {},
        "retry_config": raw.get("retry_config") or {},
        "on_error": raw.get("on_error") or "fail",
        "timeout_seconds": raw.get("timeout_seconds"),
    }


def _prompt_snapshot(prompt: Prompt) -> dict[str, Any]:
    """Same shape as ``workflow_definition_snapshot`` gives a linked prompt."""
    return {
        "id": prompt.id,
        "name": prompt.name,
        "template": prompt.template,
        "system": prompt.system,
        "model_config": prompt.model_config,
    }


def _prompt_id(value: Any) -> Any:
    if isinstance(value, Prompt):
        return value.pk
    if isinstance(value, dict):
        return value.get("id")
    return value


def _resolve_prompts(*, owner, steps: list[dict[str, Any]], errors: dict[str, list[str]]) -> dict[int, Prompt]:
    wanted = {_prompt_id(s["prompt"]) for s in steps if s["prompt"] is not None}
    found = {p.pk: p for p in Prompt.objects.filter(owner=owner, pk__in=[w for w in wanted if isinstance(w, int)])}
    for index, step in enumerate(steps):
        pid = _prompt_id(step["prompt"])
        if pid is not None and pid not in found:
            _add(errors, f"steps[{index}].prompt",
                 f"No prompt with id {pid} among yours; use the id of one of your prompts, or null.")
    return found


def _structural_errors(steps: list[dict[str, Any]], variables: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The database's own uniqueness rules, checked so that they answer 400, not 500."""
    errors: dict[str, list[str]] = {}
    seen_vars: dict[str, int] = {}
    for index, variable in enumerate(variables):
        name = variable["name"]
        if name in seen_vars:
            _add(errors, f"variables[{index}].name", f'Duplicate variable name "{name}" (also variables[{seen_vars[name]}]).')
        seen_vars.setdefault(name, index)
    names: dict[str, int] = {}
    orders: dict[Any, int] = {}
    for index, step in enumerate(steps):
        if step["name"] in names:
            _add(errors, f"steps[{index}].name",
                 f'Duplicate step name "{step["name"]}" (also steps[{names[step["name"]]}]); step names must be unique.')
        names.setdefault(step["name"], index)
        if step["order"] in orders:
            _add(errors, f"steps[{index}].order",
                 f"Duplicate step order {step['order']} (also steps[{orders[step['order']]}]); orders must be unique.")
        orders.setdefault(step["order"], index)
    return errors


def _definition_check(*, owner, steps: list[dict[str, Any]],
                      variables: list[dict[str, Any]]) -> tuple[DefinitionCheck, dict[int, Prompt]]:
    """Every error and warning of normalised rows; and the prompts the steps link to."""
    prompt_errors: dict[str, list[str]] = {}
    prompts = _resolve_prompts(owner=owner, steps=steps, errors=prompt_errors)
    _child_workflow_errors(owner=owner, steps=steps, errors=prompt_errors)
    engine_steps = []
    for step in steps:
        pid = _prompt_id(step["prompt"])
        engine_steps.append({**step, "prompt": _prompt_snapshot(prompts[pid]) if pid in prompts else None})
    found = definition_check(steps=engine_steps, variables=variables)
    check = DefinitionCheck(warnings=found.warnings)
    for path, messages in [*prompt_errors.items(), *found.errors.items()]:
        for message in messages:
            check.add_error(path, message)
    if check.ok:
        for path, messages in _structural_errors(steps, variables).items():
            for message in messages:
                check.add_error(path, message)
    return check, prompts


def _child_workflow_errors(*, owner, steps: list[dict[str, Any]], errors: dict[str, list[str]]) -> None:
    """WORKFLOW steps may only start workflows of the same owner (checked again at run time)."""
    wanted = {index: (step.get("config") or {}).get("workflow") for index, step in enumerate(steps)
              if step.get("type") == "WORKFLOW" and isinstance(step.get("config"), dict)}
    ids = [v for v in wanted.values() if isinstance(v, int) and not isinstance(v, bool)]
    mine = set(Workflow.objects.filter(owner=owner, pk__in=ids).values_list("pk", flat=True)) if ids else set()
    for index, workflow_id in wanted.items():
        if isinstance(workflow_id, int) and not isinstance(workflow_id, bool) and workflow_id not in mine:
            _add(errors, f"steps[{index}].config.workflow", f"Workflow {workflow_id} is not one of your workflows.")


def _check_definition(*, owner, steps: list[dict[str, Any]],
                      variables: list[dict[str, Any]]) -> tuple[dict[int, Prompt], list[dict[str, Any]]]:
    """Raise DefinitionInvalid naming every problem; return the linked prompts and the warnings."""
    check, prompts = _definition_check(owner=owner, steps=steps, variables=variables)
    _raise_if_errors(check.errors)
    return prompts, check.warnings


def workflow_definition_check(*, owner, steps: list[dict[str, Any]], variables: list[dict[str, Any]]) -> DefinitionCheck:
    """The save-time check of a definition as submitted (``prompt``: an id of ``owner``'s
    prompts, or null), without saving anything: errors (``{path: [messages]}``, the
    definition would be refused) and warnings (it would be saved). Pages call this."""
    return _definition_check(
        owner=owner,
        steps=[_normalise_step(s, i) for i, s in enumerate(steps or [], start=1)],
        variables=[_normalise_variable(v) for v in variables or []],
    )[0]


def _replace_definition(*, workflow: Workflow, steps: list[dict[str, Any]] | None,
                        variables: list[dict[str, Any]] | None, prompts: dict[int, Prompt]) -> None:
    if variables is not None:
        workflow.variables.all().delete()
        WorkflowVariable.objects.bulk_create([WorkflowVariable(workflow=workflow, **v) for v in variables])
    if steps is not None:
        workflow.steps.all().delete()
        WorkflowStep.objects.bulk_create(
            [
                WorkflowStep(
                    workflow=workflow,
                    name=s["name"],
                    order=s["order"],
                    type=s["type"],
                    prompt=prompts.get(_prompt_id(s["prompt"])),
                    config=s["config"],
                    retry_config=s["retry_config"],
                    on_error=s["on_error"],
                    timeout_seconds=s["timeout_seconds"],
                )
                for s in steps
            ]
        )


def _lock(workflow: Workflow) -> None:
    """Serialise writers of one workflow: two replacements of the lists must not interleave."""
    Workflow.objects.select_for_update().filter(pk=workflow.pk).first()


def _save_version(*, workflow: Workflow, user, note: str, force: bool = False) -> WorkflowVersion:
    version = workflow_version_create(workflow=workflow, user=user, note=note[:200], force=force)
    # Drop caches of the old lists (prefetches) and tell serializers the new number.
    workflow.refresh_from_db()
    workflow.latest_version_number = version.number
    return version


# --- workflows -----------------------------------------------------------------------

def workflow_create(*, owner, data: dict[str, Any]) -> Workflow:
    """Create a workflow with its variables and steps, and its version 1."""
    variables = [_normalise_variable(v) for v in data.get("variables") or []]
    steps = [_normalise_step(s, i) for i, s in enumerate(data.get("steps") or [], start=1)]
    errors: dict[str, list[str]] = {}
    _check_positive(data, errors)
    _raise_if_errors(errors, "The workflow is invalid")
    prompts, warnings = _check_definition(owner=owner, steps=steps, variables=variables)
    fields = {f: data[f] for f in WORKFLOW_FIELDS if f in data}
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(owner=owner, **fields)
            _replace_definition(workflow=workflow, steps=steps, variables=variables, prompts=prompts)
            _save_version(workflow=workflow, user=owner, note=data.get("note") or "created")
    except IntegrityError as exc:
        raise _concurrent_change(exc) from exc
    logger.info("workflow.created", extra={"workflow_id": workflow.pk})
    workflow.definition_warnings = warnings
    return workflow


def workflow_update(*, workflow: Workflow, data: dict[str, Any], user=None) -> Workflow:
    """Update fields that are present; ``variables`` / ``steps`` when present replace the
    whole list. A definition change makes a new version; a no-op makes none."""
    user = user or workflow.owner
    errors: dict[str, list[str]] = {}
    _check_positive(data, errors)
    _raise_if_errors(errors, "The workflow is invalid")
    variables = [_normalise_variable(v) for v in data["variables"]] if "variables" in data else None
    steps = [_normalise_step(s, i) for i, s in enumerate(data["steps"], start=1)] if "steps" in data else None
    prompts: dict[int, Prompt] = {}
    warnings: list[dict[str, Any]] = []
    if variables is not None or steps is not None:
        current = workflow_definition_snapshot(workflow=workflow)
        check_vars = variables if variables is not None else current["variables"]
        check_steps = steps if steps is not None else [
            {**s, "prompt": (s["prompt"] or {}).get("id")} for s in current["steps"]
        ]
        prompts, warnings = _check_definition(owner=workflow.owner, steps=check_steps, variables=check_vars)
    fields = {f: data[f] for f in WORKFLOW_FIELDS if f in data}
    try:
        with transaction.atomic():
            _lock(workflow)
            for name, value in fields.items():
                setattr(workflow, name, value)
            # Only the fields sent: a concurrent change of the others is not overwritten.
            workflow.save(update_fields=[*fields, "updated_at"])
            _replace_definition(workflow=workflow, steps=steps, variables=variables, prompts=prompts)
            _save_version(workflow=workflow, user=user, note=data.get("note") or "updated")
    except IntegrityError as exc:
        raise _concurrent_change(exc) from exc
    logger.info("workflow.updated", extra={"workflow_id": workflow.pk, "version": workflow.latest_version_number})
    workflow.definition_warnings = warnings
    return workflow


def workflow_delete(*, workflow: Workflow, user=None) -> None:
    """Delete a workflow with its versions, runs and triggers, unless runs are in flight."""
    active = workflow.executions.filter(status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING]).count()
    if active:
        raise WorkflowBusy(
            f'Workflow "{workflow.name}" has {active} pending or running execution{"s" if active > 1 else ""}; '
            "cancel them or wait for them to finish, then delete it (or set is_active to false).",
            {"active_executions": active},
        )
    pk = workflow.pk
    with transaction.atomic():
        # NOTE: runs first: they PROTECT the versions that the workflow's cascade deletes.
        workflow.executions.all().delete()
        workflow.delete()
    logger.info("workflow.deleted", extra={"workflow_id": pk})


def _restored_step(step: dict[str, Any], *, owner, notes: list[str]) -> dict[str, Any]:
    """A snapshot step as a row. A linked prompt is relinked when it still exists with the
    text the snapshot recorded; otherwise the recorded text is inlined so the restored
    definition behaves as the old version did."""
    config = dict(step.get("config") or {})
    linked = step.get("prompt")
    prompt = None
    if linked:
        current = Prompt.objects.filter(owner=owner, pk=linked.get("id")).first()
        if current is not None and _prompt_snapshot(current) == {**_prompt_snapshot(current), **linked}:
            prompt = current
        else:
            config.setdefault("template", linked.get("template") or "")
            if linked.get("system"):
                config.setdefault("system", linked["system"])
            if linked.get("model_config") and "model" not in config and "models" not in config:
                config["model"] = linked["model_config"]
            notes.append(f'prompt "{linked.get("name")}" inlined into step "{step.get("name")}"')
    return {
        "name": step["name"],
        "order": step["order"],
        "type": step["type"],
        "prompt": prompt.pk if prompt else None,
        "config": config,
        "retry_config": step.get("retry_config") or {},
        "on_error": step.get("on_error") or "fail",
        "timeout_seconds": step.get("timeout_seconds"),
    }


def workflow_version_restore(*, workflow: Workflow, number: Any, user) -> Workflow:
    """Rebuild variables, steps and run limits from version ``number`` as a new version."""
    version = workflow_version_get(workflow, number)
    definition = version.definition or {}
    notes: list[str] = []
    variables = [_normalise_variable(v) for v in definition.get("variables", [])]
    steps = [_restored_step(step, owner=workflow.owner, notes=notes) for step in definition.get("steps", [])]
    prompts, warnings = _check_definition(owner=workflow.owner, steps=steps, variables=variables)
    limits = definition.get("workflow") or {}
    note = f"restored from v{version.number}" + (f" ({'; '.join(notes)})" if notes else "")
    try:
        with transaction.atomic():
            _lock(workflow)
            restored = [f for f in ("timeout_seconds", "max_concurrent_executions") if f in limits]
            for field in restored:
                setattr(workflow, field, limits[field])
            workflow.save(update_fields=[*restored, "updated_at"])
            _replace_definition(workflow=workflow, steps=steps, variables=variables, prompts=prompts)
            # NOTE: forced, so the history shows the restore even when nothing changed.
            _save_version(workflow=workflow, user=user, note=note, force=True)
    except IntegrityError as exc:
        raise _concurrent_change(exc) from exc
    logger.info("workflow.version_restored", extra={"workflow_id": workflow.pk, "from_version": version.number})
    workflow.definition_warnings = warnings
    return workflow


# --- prompts -------------------------------------------------------------------------

def _check_prompt(data: dict[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    for field in ("template", "system"):
        text = data.get(field)
        if not text:
            continue
        problem = validate_template(text)
        if problem:
            _add(errors, field, problem)
    config = data.get("model_config")
    if config:
        for key in ("provider", "model"):
            if key in config and not (isinstance(config[key], str) and config[key].strip()):
                _add(errors, f"model_config.{key}", f"{key} must be a non-empty string.")
    if errors:
        path, messages = next(iter(errors.items()))
        raise ValidationFailed(f"The prompt is invalid: {path}: {messages[0]}", {"errors": errors})


def prompt_create(*, owner, data: dict[str, Any]) -> Prompt:
    _check_prompt(data)
    fields = {f: data[f] for f in PROMPT_FIELDS if f in data}
    if fields.get("system") is None:
        fields.pop("system", None)
    if fields.get("model_config") is None:
        fields.pop("model_config", None)
    prompt = Prompt.objects.create(owner=owner, **fields)
    logger.info("prompt.created", extra={"prompt_id": prompt.pk})
    return prompt


def prompt_update(*, prompt: Prompt, data: dict[str, Any], user=None) -> Prompt:
    """Update a prompt; every workflow whose steps use it gets a new version, since
    versions embed the prompt's text."""
    _check_prompt(data)
    user = user or prompt.owner
    with transaction.atomic():
        for field in PROMPT_FIELDS:
            if field in data:
                value = data[field]
                if field in ("system",) and value is None:
                    value = ""
                if field == "model_config" and value is None:
                    value = {}
                setattr(prompt, field, value)
        prompt.save()
        workflows = Workflow.objects.filter(steps__prompt=prompt).distinct().order_by("pk")
        for workflow in workflows:
            workflow_version_create(workflow=workflow, user=user, note=f'prompt "{prompt.name}" changed'[:200])
    logger.info("prompt.updated", extra={"prompt_id": prompt.pk})
    return prompt


def prompt_delete(*, prompt: Prompt, user=None) -> None:
    users = list(Workflow.objects.filter(steps__prompt=prompt).distinct().order_by("name", "pk").values("id", "name"))
    if users:
        names = ", ".join(f'"{w["name"]}" (id {w["id"]})' for w in users)
        raise PromptInUse(
            f'Prompt "{prompt.name}" is used by steps of the workflow{"s" if len(users) > 1 else ""} {names}; '
            "unlink it from those steps first.",
            {"workflows": users},
        )
    pk = prompt.pk
    prompt.delete()
    logger.info("prompt.deleted", extra={"prompt_id": pk})
