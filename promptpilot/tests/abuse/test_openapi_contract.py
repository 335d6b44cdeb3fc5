"""What the outside probe's schemathesis run found: the OpenAPI document must say what the
API does (nullable fields, query values checked, every status documented)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(api) -> dict:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _operation(document: dict, path: str, method: str) -> dict:
    return document["paths"][path][method]


def test_trigger_fields_returned_null_are_declared_nullable(document):
    fields = document["components"]["schemas"]["Trigger"]["properties"]
    for name in ("webhook_url", "previous_secret_expires_at", "api_key_prefix"):
        assert fields[name].get("nullable") is True, (name, fields[name])


@pytest.mark.parametrize("query", ["status=", "status=DONE", "page_size=false", "page_size=0", "page_size=201",
                                   "page=0", "page=-1", "page=abc", "workflow="])
def test_invalid_list_queries_answer_400_naming_the_parameter(api, query):
    response = api.get(f"/api/executions/?{query}")
    assert response.status_code == 400, (query, response.content)
    name = query.split("=")[0]
    assert name in response.json()["message"] or name in response.json()["extra"].get("errors", {}), response.json()


@pytest.mark.parametrize("query", ["status=COMPLETED", "status=completed,failed", "page_size=200", "page=1"])
def test_valid_list_queries_are_accepted(api, query):
    assert api.get(f"/api/executions/?{query}").status_code == 200


def test_a_page_past_the_last_is_a_documented_404(api, document):
    assert api.get("/api/prompts/?page=2").status_code == 404
    listing = _operation(document, "/api/prompts/", "get")
    assert {"400", "404"} <= set(listing["responses"])
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert params["page"]["minimum"] == 1
    assert params["page_size"] == {"type": "integer", "minimum": 1, "maximum": 200}


def test_body_size_and_url_length_limits_are_documented(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            assert "414" in operation["responses"], (method, path)
            if "requestBody" in operation:
                assert "413" in operation["responses"], (method, path)


@pytest.mark.parametrize("body", [{"name": 0, "template": "x"}, {"name": "x", "template": "x", "system": 0}])
def test_a_number_where_a_string_is_declared_is_refused(api, body):
    response = api.post("/api/prompts/", body, format="json")
    assert response.status_code == 400
    assert "Must be a string" in str(response.json()["extra"])


def test_a_number_where_a_boolean_is_declared_is_refused(api):
    body = {"name": "w", "is_active": 0, "variables": [], "steps": []}
    response = api.post("/api/workflows/", body, format="json")
    assert response.status_code == 400
    assert "true or false" in str(response.json()["extra"])
