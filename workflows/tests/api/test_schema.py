"""The OpenAPI document and its UI."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from drf_spectacular.management.commands.spectacular import SchemaGenerationError


@pytest.mark.django_db
def test_schema_is_served_and_lists_the_api(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert "/api/workflows/{id}/execute/" in paths
    assert "post" in paths["/api/workflows/{id}/execute/"]
    for path in ("/api/auth/token/", "/api/prompts/", "/api/workflows/", "/api/workflows/{id}/preview/",
                 "/api/workflows/{id}/versions/", "/api/workflows/{id}/versions/{number}/restore/",
                 "/api/executions/", "/api/executions/{id}/", "/api/executions/{id}/cancel/",
                 "/api/executions/{id}/retry/"):
        assert path in paths, path


@pytest.mark.django_db
def test_schema_path_without_slash_and_docs_page(api):
    assert api.get("/api/schema").status_code == 200
    docs = api.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_schema_generates_without_warnings(tmp_path, capsys):
    # --fail-on-warn turns every drf-spectacular warning into an error.
    try:
        call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    except SchemaGenerationError:
        warnings = [line for line in capsys.readouterr().err.splitlines() if "Warning" in line or "Error" in line]
        pytest.fail(
            "drf-spectacular warned while generating the schema. Enum collisions (fields named type/status) are "
            "fixed by SPECTACULAR_SETTINGS['ENUM_NAME_OVERRIDES'] in settings:\n" + "\n".join(warnings)
        )
    assert "/api/workflows/{id}/execute/" in (tmp_path / "schema.yaml").read_text()
