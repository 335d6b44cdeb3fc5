"""Facts of the whole API that the OpenAPI document states once, for every operation
(a drf-spectacular postprocessing hook), so a new view is documented as it behaves:

- lists (a ``Paginated*`` 200 body) take ``page`` (from 1) and ``page_size`` (1-200):
  a bad value answers 400, a page past the last 404 (``promptpilot/common/pagination.py``);
- a request body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` answers 413;
- a request line longer than the web server allows answers 414 (gunicorn, before Django).
"""
from __future__ import annotations

from typing import Any

from .pagination import MAX_PAGE_SIZE

ERROR_REF = {"$ref": "#/components/schemas/Error"}
PAGE_PARAMETERS = [
    {"in": "query", "name": "page", "schema": {"type": "integer", "minimum": 1},
     "description": "Page number, from 1. A page past the last answers 404."},
    {"in": "query", "name": "page_size", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
     "description": f"Items per page, 1 to {MAX_PAGE_SIZE} (default 50)."},
]
_METHODS = ("get", "put", "post", "patch", "delete")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _is_list(operation: dict[str, Any]) -> bool:
    schema = ((operation.get("responses", {}).get("200") or {}).get("content") or {}) \
        .get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").startswith("#/components/schemas/Paginated")


def api_facts(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    for path_item in result.get("paths", {}).values():
        for method in _METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if _is_list(operation):
                names = {p["name"] for p in PAGE_PARAMETERS}
                operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("name") not in names]
                operation["parameters"].extend(dict(p) for p in PAGE_PARAMETERS)
                responses.setdefault("400", _error("A query parameter is invalid (the message names it)."))
                responses.setdefault("404", _error("The page is past the last one."))
            if "requestBody" in operation:
                responses.setdefault("413", _error("The request body is larger than 1 MiB."))
            responses.setdefault("414", {"description": "The URL is longer than the web server accepts."})
    return result
