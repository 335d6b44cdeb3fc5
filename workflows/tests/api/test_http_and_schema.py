"""HTTP steps and output_schema through the API, the admin and previews: save-time checks
(400 naming step and field), credentials encrypted at rest and admin-only, previews that
call the fake server or, in a dry run, nothing."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from django.urls import reverse

from providers.tests.fakes import FakeServer, Reply
from workflows.models import HttpCredential, Workflow
from workflows.services.http_steps import http_credential_get

pytestmark = pytest.mark.django_db

TOKEN = "tok-9f8e7d6c5b4a"
ADD_URL = reverse("admin:workflows_httpcredential_add")


@pytest.fixture
def server(settings) -> Iterator[FakeServer]:
    fake = FakeServer()
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "HTTP_ALLOWED_HOSTS": [httpx.URL(fake.url).netloc.decode()]}
    yield fake
    fake.close()


def _credential(server: FakeServer, name: str = "crm") -> HttpCredential:
    row = HttpCredential(name=name, hosts=httpx.URL(server.url).netloc.decode())
    row.set_headers({"Authorization": f"Bearer {TOKEN}"})
    row.save()
    return row


def _http_step(url: str, **config) -> dict:
    return {"name": "lookup", "order": 1, "type": "HTTP", "config": {"url": url, **config}}


def _refused(response, path: str) -> str:
    assert response.status_code == 400, response.json()
    errors = response.json()["extra"]["errors"]
    assert path in errors, errors
    return errors[path][0]


def test_an_unknown_credential_is_refused_naming_step_and_field(api, workflow_payload, server) -> None:
    _credential(server, "crm")
    response = api.post("/api/workflows/", workflow_payload(steps=[
        _http_step("https://api.example.com/x", credential="crn")]), format="json")

    message = _refused(response, "steps[0].config.credential")
    assert 'Step "lookup"' in message and '"crn"' in message and "known: crm" in message
    assert Workflow.objects.count() == 0


def test_an_invalid_output_schema_is_refused_naming_step_and_field(api, workflow_payload) -> None:
    response = api.post("/api/workflows/", workflow_payload(steps=[
        {"name": "ask", "order": 1, "type": "PROMPT", "config": {
            "template": "x", "model": {"provider": "echo", "model": "echo"},
            "output_schema": {"type": "object", "required": "title"}}}]), format="json")

    message = _refused(response, "steps[0].config.output_schema")
    assert message.startswith('Step "ask": output_schema is not a valid JSON Schema')
    assert "$.required" in message


def test_a_valid_http_step_with_a_credential_saves(api, workflow_payload, server) -> None:
    _credential(server)
    response = api.post("/api/workflows/", workflow_payload(variables=[], steps=[
        _http_step(server.url + "/x", credential="crm", output_format="json")]), format="json")
    assert response.status_code == 201, response.json()


def test_credential_headers_are_encrypted_at_rest(server) -> None:
    row = _credential(server)
    stored = HttpCredential.objects.filter(pk=row.pk).values_list("headers_encrypted", flat=True).get()
    assert TOKEN not in stored
    credential = http_credential_get(name="crm")
    assert credential.headers == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in repr(credential)


def test_admin_stores_headers_encrypted_never_shows_them_and_is_staff_only(admin_client, client, user) -> None:
    response = admin_client.post(ADD_URL, {"name": "crm", "hosts": "api.example.com", "description": "",
                                           "secret_headers": f"Authorization: Bearer {TOKEN}\nX-Team: growth"})
    assert response.status_code == 302, response.content[:2000]
    row = HttpCredential.objects.get(name="crm")
    assert row.headers() == {"Authorization": f"Bearer {TOKEN}", "X-Team": "growth"}
    assert row.header_names == "Authorization, X-Team"
    page = admin_client.get(reverse("admin:workflows_httpcredential_change", args=[row.pk]))
    assert page.status_code == 200 and TOKEN.encode() not in page.content

    kept = admin_client.post(reverse("admin:workflows_httpcredential_change", args=[row.pk]),
                             {"name": "crm", "hosts": "api.example.com", "description": "now described",
                              "secret_headers": ""})
    assert kept.status_code == 302
    assert HttpCredential.objects.get(name="crm").headers()["Authorization"] == f"Bearer {TOKEN}"

    client.force_login(user)  # not staff
    assert client.get(ADD_URL).status_code == 302  # to the admin login


def test_admin_refuses_a_credential_without_hosts_or_headers(admin_client) -> None:
    response = admin_client.post(ADD_URL, {"name": "bare", "hosts": "", "secret_headers": "no colon here"})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "hosts" in errors and "secret_headers" in errors
    assert not HttpCredential.objects.exists()


def test_preview_calls_the_server_with_the_credential_and_hides_it(api, create_workflow, server) -> None:
    _credential(server)
    server.queue(Reply(200, {"plan": "pro", "token_seen": TOKEN}))
    created = create_workflow(variables=[{"name": "id", "type": "STRING", "required": True}], steps=[
        _http_step(server.url + "/customers/{{ input.id }}", credential="crm", output_format="json"),
        {"name": "say", "order": 2, "type": "TRANSFORM", "config": {"template": "plan={{ steps.lookup.output.body.plan }}"}},
    ])

    body = api.post(f"/api/workflows/{created['id']}/preview", {"input": {"id": "c7"}}, format="json").json()

    assert body["status"] == "COMPLETED", body
    assert body["output"] == "plan=pro"
    assert server.requests[0].path == "/customers/c7"
    assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(body)


def test_dry_run_preview_makes_no_http_call_and_marks_the_placeholder(api, create_workflow, server) -> None:
    created = create_workflow(variables=[], steps=[_http_step(server.url + "/x", output_format="json")])

    body = api.post(f"/api/workflows/{created['id']}/preview", {"input": {}, "dry_run_models": True},
                    format="json").json()

    [step] = body["steps"]
    assert step["status"] == "COMPLETED" and step["dry_run"] is True
    assert step["output"]["dry_run"] is True
    assert any("no HTTP request was sent" in warning for warning in step["warnings"])
    assert server.requests == []


def test_preview_refuses_a_loopback_host_that_is_not_allowed(api, create_workflow, settings) -> None:
    target = FakeServer()
    try:
        created = create_workflow(variables=[], steps=[_http_step(target.url + "/admin")])
        body = api.post(f"/api/workflows/{created['id']}/preview", {"input": {}}, format="json").json()
        assert body["status"] == "FAILED"
        assert body["steps"][0]["error"]["type"] == "HttpRefused"
        assert target.requests == []
    finally:
        target.close()


def test_dry_run_preview_of_a_schema_step_warns_that_the_schema_was_not_checked(api, create_workflow) -> None:
    created = create_workflow(variables=[], steps=[{"name": "ask", "order": 1, "type": "PROMPT", "config": {
        "template": "JSON please", "model": {"provider": "echo", "model": "echo"},
        "output_schema": {"type": "object"}}}])
    body = api.post(f"/api/workflows/{created['id']}/preview", {"input": {}, "dry_run_models": True},
                    format="json").json()
    assert body["status"] == "COMPLETED"
    assert any("output_schema was not checked" in w for w in body["steps"][0]["warnings"])
