"""Ownership, swept over the URLconf: every API and page route that takes an object id,
with every verb. Another user gets 404 for the owner's ids (405 where a verb is not
served at all), anonymous clients are refused (401/403, or the login page), and no list
shows another user's objects. Routes are read from the URLconf, so a new route is swept
without editing this test; a route for which no object of the owner's is found fails
(extend ``owned`` below)."""
from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from triggers.models import TriggerInvocation
from triggers.tests.helpers import create_trigger
from workflows.models import Prompt, WorkflowExecution, WorkflowStepExecution
from workflows.services.definitions import workflow_current_version
from workflows.tests.factories import make_workflow

pytestmark = pytest.mark.django_db

MARKER = "alpha-private-7f3c"  # in the owner's object names: must never reach another user
VERBS = ("get", "post", "put", "patch", "delete")
SKIPPED_NAMESPACES = {"admin"}  # staff see everything there by design (DESIGN §7)
# Public by design, authenticated by something other than a user: the signature.
PUBLIC_ROUTES = {"triggers_api:webhook"}
LOGIN_PATH = "/accounts/login/"


def _routes(patterns=None, namespace: str = "") -> Iterator[tuple[str, tuple[str, ...]]]:
    """``(reversible name, kwarg names)`` of every named route."""
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            ns = entry.namespace or ""
            if ns in SKIPPED_NAMESPACES:
                continue
            yield from _routes(entry.url_patterns, f"{namespace}{ns}:" if ns else namespace)
        elif isinstance(entry, URLPattern) and entry.name:
            pattern = entry.pattern
            kwargs = tuple(getattr(pattern, "converters", {}) or ()) or tuple(pattern.regex.groupindex)
            yield f"{namespace}{entry.name}", kwargs


ROUTES = sorted(set(_routes()))
OBJECT_ROUTES = [(name, kwargs) for name, kwargs in ROUTES if kwargs and name not in PUBLIC_ROUTES]
LIST_ROUTES = [name for name, kwargs in ROUTES if not kwargs]


@pytest.fixture
def owned(user) -> dict[str, list]:
    """One of each kind of the owner's objects; values for each URL keyword."""
    prompt = Prompt.objects.create(owner=user, name=f"{MARKER} prompt", template="Hi {{ input.name }}")
    workflow = make_workflow(user, name=f"{MARKER} workflow",
                             variables=[{"name": "name", "type": "STRING", "required": True}],
                             steps=[{"name": "greet", "type": "TRANSFORM", "config": {"template": "Hi"}}])
    execution = WorkflowExecution.objects.create(
        workflow=workflow, version=workflow_current_version(workflow=workflow), status="FAILED",
        input={"name": MARKER}, error={"type": "X", "message": MARKER, "step": "greet", "details": {}})
    triggers = [create_trigger(workflow, kind, name=f"{MARKER} {kind.lower()}", config=config)[0]
                for kind, config in (("MANUAL", {}), ("WEBHOOK", {}), ("API", {}),
                                     ("SCHEDULED", {"cron": "0 3 * * *", "timezone": "UTC", "input": {"name": "x"}}),
                                     ("EVENT", {"event": "order.created"}))]
    # A MAP step's row and one item of it (the items route takes the step's name).
    for item_index, step_type in ((None, "MAP"), (0, "TRANSFORM")):
        WorkflowStepExecution.objects.create(execution=execution, step_name="each", step_order=2,
                                             step_type=step_type, item_index=item_index, status="COMPLETED",
                                             input={"item": MARKER}, output=MARKER)
    invocation = TriggerInvocation.objects.create(trigger=triggers[0], status="ACCEPTED", verified=True,
                                                  payload={"m": MARKER}, execution=execution)
    ids = [prompt.pk, workflow.pk, execution.pk, invocation.pk, *(t.pk for t in triggers)]
    return {"id": ids, "trigger_id": [t.pk for t in triggers], "number": [1], "step": ["each"]}


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)  # a session: pages and API alike
    return client


def _call(client, verb: str, url: str):
    if verb in ("get", "delete"):
        return getattr(client, verb)(url)
    return getattr(client, verb)(url, {}, format="json")


def _owned_urls(owner_client, name: str, kwargs: tuple[str, ...], owned: dict) -> list[str]:
    """The URLs of this route that reach one of the owner's objects (GET, else an empty POST)."""
    urls = []
    for values in itertools.product(*(owned.get(k, []) for k in kwargs)):
        try:
            url = reverse(name, kwargs=dict(zip(kwargs, values, strict=True)))
        except NoReverseMatch:
            continue  # a typed converter (<uuid:id>, <int:id>) that does not take this kind of id
        response = owner_client.get(url)
        if response.status_code == 405:
            response = _call(owner_client, "post", url)
        if response.status_code not in (404, 405):
            urls.append(url)
    return urls


def test_the_sweep_covers_the_api_and_the_pages():
    names = {name for name, _ in OBJECT_ROUTES}
    assert {"workflows_api:workflow-detail", "triggers_api:trigger-detail", "workflows_api:execution-cancel",
            "executions:detail", "triggers:detail"} <= names, names


def test_the_public_routes_still_exist_and_refuse_unsigned_requests(owned, other_user):
    names = {name for name, _ in ROUTES}
    assert PUBLIC_ROUTES <= names, "a public route was renamed: update PUBLIC_ROUTES"
    webhook = owned["trigger_id"][1]
    response = _client(other_user).post(reverse("triggers_api:webhook", kwargs={"trigger_id": webhook}),
                                        {"customer": "x"}, format="json")
    assert response.status_code == 401
    assert WorkflowExecution.objects.count() == 1  # the owner's only


@pytest.mark.parametrize(("name", "kwargs"), OBJECT_ROUTES, ids=[name for name, _ in OBJECT_ROUTES])
def test_another_user_gets_404_for_the_owners_ids(name, kwargs, user, other_user, owned):
    urls = _owned_urls(_client(user), name, kwargs, owned)
    assert urls, f"No object of the owner's reaches {name}: add one to the `owned` fixture."
    intruder, anonymous = _client(other_user), _client()
    for url, verb in itertools.product(urls, VERBS):
        response = _call(intruder, verb, url)
        assert response.status_code in (404, 405), (verb.upper(), url, response.status_code, response.content[:300])
        assert MARKER.encode() not in response.content, (verb.upper(), url)
        response = _call(anonymous, verb, url)
        refused = response.status_code in (401, 403, 405) or (
            response.status_code == 302 and response["Location"].startswith(LOGIN_PATH))
        assert refused, ("anonymous", verb.upper(), url, response.status_code, response.content[:300])
        assert MARKER.encode() not in response.content, ("anonymous", verb.upper(), url)


@pytest.mark.parametrize("name", LIST_ROUTES)
def test_lists_show_another_user_none_of_the_owners_objects(name, other_user, owned):
    # Only what is shown matters here (``/readyz`` answers 503 while no worker runs).
    body = _client(other_user).get(reverse(name)).content
    assert MARKER.encode() not in body, name
    for value in owned["trigger_id"] + [owned["id"][2]]:  # the UUIDs
        assert str(value).encode() not in body, (name, value)
