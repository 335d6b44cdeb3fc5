"""``X-API-Key`` authentication for API triggers.

A key authenticates one trigger, not a user: on success ``request.user`` stays
anonymous and ``request.auth`` is a ``TriggerKeyAuth`` naming the trigger, taken from
the URL (``/api/triggers/{id}/execute``). Without the header this class steps aside, so
the owner's token or session still works on the same path.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from promptpilot.common.throttling import credential_failure_record, credential_failures_check

from . import selectors
from .models import WorkflowTrigger
from .services.api_keys import api_key_matches

API_KEY_HEADER = "X-API-Key"
WWW_AUTHENTICATE = f'ApiKey header="{API_KEY_HEADER}"'


@dataclass(frozen=True)
class TriggerKeyAuth:
    trigger: WorkflowTrigger


class ApiKeyRejected(exceptions.APIException):
    """401 with our own message (DRF's AuthenticationFailed would point at the token login)."""

    status_code = 401
    default_code = "invalid_api_key"
    default_detail = f"The {API_KEY_HEADER} header does not hold this trigger's API key."


class TriggerApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        key = request.headers.get(API_KEY_HEADER)
        if key is None:
            return None
        trigger_id = str(((request.parser_context or {}).get("kwargs") or {}).get("id"))
        credential_failures_check(request, kind="api_key", target=trigger_id, what="this trigger")
        trigger = selectors.trigger_get_for_key(trigger_id)
        if trigger is None:
            credential_failure_record(request, kind="api_key", target=trigger_id)  # probing for trigger ids
            raise exceptions.NotFound(f"No active API trigger with id {trigger_id}.", code="trigger_not_found")
        if not api_key_matches(trigger=trigger, key=key.strip()):
            credential_failure_record(request, kind="api_key", target=trigger_id)
            raise ApiKeyRejected(
                f"The {API_KEY_HEADER} header does not hold this trigger's API key. Keys are shown once at "
                "creation and replaced by POST /api/triggers/{id}/rotate-secret."
            )
        return AnonymousUser(), TriggerKeyAuth(trigger)

    def authenticate_header(self, request) -> str:
        return WWW_AUTHENTICATE


class IsOwnerOrTriggerKey(BasePermission):
    """A valid trigger API key, or a logged-in user (ownership is checked by the selectors)."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, TriggerKeyAuth) or bool(request.user and request.user.is_authenticated)


class TriggerApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "triggers.authentication.TriggerApiKeyAuthentication"
    name = "TriggerApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                "description": "An API trigger's key (pp_...), shown once at creation or rotation."}
