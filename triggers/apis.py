"""REST API of triggers (DESIGN §5, §7): CRUD with metrics, execute, rotate-secret, and
the Standard Webhooks receiver.

Views are thin: parse, call one selector or service, serialize, respond. Ownership is
enforced by the selectors (another user's trigger answers 404, like a missing one).
"""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from knox.auth import TokenAuthentication
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from promptpilot.common.apis import IDEMPOTENCY_HEADER, BaseApi, error_responses, idempotency_key, validated_data
from promptpilot.common.errors import ApplicationError, ValidationFailed
from promptpilot.common.pagination import paginated_response, paginated_serializer
from workflows.serializers import ExecutionSerializer, validate_storable_json

from . import selectors
from .authentication import (
    API_KEY_HEADER,
    WWW_AUTHENTICATE,
    ApiKeyRejected,
    IsOwnerOrTriggerKey,
    TriggerApiKeyAuthentication,
    TriggerKeyAuth,
)
from .errors import TriggerNotFound
from .serializers import (
    EventEmitInputSerializer,
    EventEmittedSerializer,
    InvocationDetailSerializer,
    TriggerCreateInputSerializer,
    TriggerDetailSerializer,
    TriggerExecutedSerializer,
    TriggerExecuteInputSerializer,
    TriggerFiredSerializer,
    TriggerRotateInputSerializer,
    TriggerSerializer,
    TriggerUpdateInputSerializer,
    TriggerWithSecretSerializer,
)
from .services import triggers as trigger_services
from .services import webhook_fast_path
from .services.events import event_emit
from .services.metrics import trigger_metrics
from .services.webhooks import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WebhookRequest,
    webhook_receive,
    webhook_receive_remembered,
    webhook_record_too_large,
    webhook_trigger_for_delivery,
)
from .throttling import TriggerRateThrottle, trigger_rate

TRIGGER_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Trigger id.")
TAGS = ["triggers"]


def _detail(request: Request, trigger) -> dict[str, Any]:
    context = {
        "request": request,
        "metrics": trigger_metrics(trigger=trigger),
        "recent_invocations": selectors.invocation_recent(trigger),
    }
    return TriggerDetailSerializer(trigger, context=context).data


def _with_secret(request: Request, trigger, secret: str | None) -> dict[str, Any]:
    trigger.secret = secret
    return TriggerWithSecretSerializer(trigger, context={"request": request}).data


def _fired(invocation) -> tuple[dict[str, Any], int]:
    duplicate = bool(getattr(invocation, "was_duplicate", False))
    body = {
        "execution_id": invocation.execution_id,
        "invocation_id": invocation.pk,
        "status": "DUPLICATE" if duplicate else invocation.status,
    }
    return body, status.HTTP_200_OK if duplicate else status.HTTP_202_ACCEPTED


class TriggerListCreateApi(BaseApi):
    @extend_schema(
        operation_id="triggers_list", tags=TAGS,
        parameters=[OpenApiParameter("workflow", int, description="Only triggers of this workflow.")],
        responses={200: paginated_serializer(TriggerSerializer, "PaginatedTriggerList"), **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        queryset = selectors.trigger_list(request.user, workflow=request.query_params.get("workflow"))
        return paginated_response(request=request, view=self, queryset=queryset, serializer_class=TriggerSerializer)

    @extend_schema(
        operation_id="triggers_create", tags=TAGS, request=TriggerCreateInputSerializer,
        responses={201: TriggerWithSecretSerializer, **error_responses(400)},
        description="WEBHOOK and API triggers answer with `secret` (the whsec_ signing secret or the pp_ API "
                    "key): it is shown this once and stored only encrypted or hashed.",
    )
    def post(self, request: Request) -> Response:
        trigger, secret = trigger_services.trigger_create(owner=request.user,
                                                          **validated_data(TriggerCreateInputSerializer, request))
        return Response(_with_secret(request, trigger, secret), status=status.HTTP_201_CREATED)


class TriggerDetailApi(BaseApi):
    @extend_schema(operation_id="triggers_retrieve", tags=TAGS, parameters=[TRIGGER_ID],
                   responses={200: TriggerDetailSerializer, **error_responses(404)})
    def get(self, request: Request, id: str) -> Response:
        return Response(_detail(request, selectors.trigger_get(request.user, id)))

    def _update(self, request: Request, id: str, *, partial: bool) -> Response:
        trigger = selectors.trigger_get(request.user, id)
        data = validated_data(TriggerUpdateInputSerializer, request, partial=partial)
        trigger = trigger_services.trigger_update(trigger=trigger, data=data)
        return Response(_detail(request, trigger))

    @extend_schema(operation_id="triggers_update", tags=TAGS, parameters=[TRIGGER_ID],
                   request=TriggerUpdateInputSerializer,
                   responses={200: TriggerDetailSerializer, **error_responses(400, 404)},
                   description="`name` is required; left-out fields keep their values. `type` and `workflow` "
                               "cannot change.")
    def put(self, request: Request, id: str) -> Response:
        return self._update(request, id, partial=False)

    @extend_schema(operation_id="triggers_partial_update", tags=TAGS, parameters=[TRIGGER_ID],
                   request=TriggerUpdateInputSerializer,
                   responses={200: TriggerDetailSerializer, **error_responses(400, 404)})
    def patch(self, request: Request, id: str) -> Response:
        return self._update(request, id, partial=True)

    @extend_schema(operation_id="triggers_destroy", tags=TAGS, parameters=[TRIGGER_ID],
                   responses={204: None, **error_responses(404)})
    def delete(self, request: Request, id: str) -> Response:
        trigger_services.trigger_delete(trigger=selectors.trigger_get(request.user, id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TriggerInvocationListApi(BaseApi):
    @extend_schema(operation_id="triggers_invocations_list", tags=TAGS,
                   parameters=[TRIGGER_ID],
                   responses={200: paginated_serializer(InvocationDetailSerializer, "PaginatedInvocationList"),
                              **error_responses(404)})
    def get(self, request: Request, id: str) -> Response:
        trigger = selectors.trigger_get(request.user, id)
        return paginated_response(request=request, view=self, queryset=selectors.invocation_list(trigger),
                                  serializer_class=InvocationDetailSerializer)


class TriggerRotateSecretApi(BaseApi):
    @extend_schema(
        operation_id="triggers_rotate_secret", tags=TAGS, parameters=[TRIGGER_ID], request=TriggerRotateInputSerializer,
        responses={200: TriggerWithSecretSerializer, **error_responses(400, 404)},
        description="A new webhook secret or API key, shown this once as `secret`. The old one stops working now, "
                    "unless a WEBHOOK rotation asks for `grace_seconds` during which the previous secret still "
                    "verifies.",
    )
    def post(self, request: Request, id: str) -> Response:
        trigger = selectors.trigger_get(request.user, id)
        data = validated_data(TriggerRotateInputSerializer, request)
        trigger, secret = trigger_services.trigger_rotate_secret(trigger=trigger, grace_seconds=data["grace_seconds"])
        return Response(_with_secret(request, trigger, secret))


class TriggerExecuteApi(BaseApi):
    """MANUAL (owner's token or session) and API (``X-API-Key``) triggers start a run here."""

    authentication_classes = [TriggerApiKeyAuthentication, TokenAuthentication, SessionAuthentication]
    permission_classes = [IsOwnerOrTriggerKey]
    throttle_classes = [TriggerRateThrottle]

    def _trigger(self, request: Request):
        if not hasattr(self, "_cached_trigger"):
            if isinstance(request.auth, TriggerKeyAuth):
                self._cached_trigger = request.auth.trigger
            else:
                self._cached_trigger = selectors.trigger_get(request.user, self.kwargs.get("id"))
        return self._cached_trigger

    def throttle_trigger(self, request: Request):
        try:
            return self._trigger(request)
        except ApplicationError:
            return None  # the handler answers 404

    def permission_denied(self, request: Request, message=None, code=None):
        raise ApiKeyRejected(
            f"Authentication required: send the trigger's key as {API_KEY_HEADER}, or the owner's "
            "'Authorization: Token <token>' (from POST /api/auth/token/).",
            code="not_authenticated",
        )

    def throttled(self, request: Request, wait: float | None):
        trigger = self.throttle_trigger(request)
        raise exceptions.Throttled(
            wait, detail=f"This trigger's rate limit ({trigger_rate(trigger) if trigger else 'default'}) is used up; "
                         "retry after the number of seconds in the Retry-After header.",
        )

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if response is not None and response.status_code == 401:
            response["WWW-Authenticate"] = WWW_AUTHENTICATE
        return response

    @extend_schema(
        operation_id="triggers_execute", tags=TAGS,
        parameters=[
            TRIGGER_ID,
            OpenApiParameter(API_KEY_HEADER, str, OpenApiParameter.HEADER, required=False,
                             description="API triggers: the key (no user token needed)."),
            OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER, required=False,
                             description="A key already used for this trigger answers 200 with the first run."),
        ],
        request=TriggerExecuteInputSerializer,
        responses={
            202: TriggerExecutedSerializer,
            200: OpenApiResponse(TriggerExecutedSerializer, description="Replay of an Idempotency-Key."),
            **error_responses(400, 401, 404, 409, 429),
        },
        description="`input` fills the workflow's variables; the whole body is `trigger.payload` in templates.",
    )
    def post(self, request: Request, id: str) -> Response:
        trigger = self._trigger(request)
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise ValidationFailed('The body must be a JSON object such as {"input": {...}}.')
        validated_data(TriggerExecuteInputSerializer, request)
        validate_storable_json(body)
        by_key = isinstance(request.auth, TriggerKeyAuth)
        invocation = trigger_services.trigger_execute(
            trigger=trigger, body=body, actor=None if by_key else request.user,
            idempotency_key=idempotency_key(request), verified_by="api_key" if by_key else "owner",
        )
        data, code = _fired(invocation)
        data["execution"] = ExecutionSerializer(invocation.execution).data if invocation.execution else None
        return Response(data, status=code)


_WEBHOOK_HEADER_KEYS = [(name, "HTTP_" + name.upper().replace("-", "_"))
                        for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)]


class WebhookReceiveApi(BaseApi):
    """Standard Webhooks receiver. No user auth (the signature is the auth), CSRF exempt."""

    # A POST skips DRF's request and response wrapping (content negotiation, parsers,
    # renderers): the receiver is the API's hottest path and needs none of it
    # (bench/README.md, "Webhooks benchmark"). Errors still go through the project's DRF
    # exception handler, so their JSON bodies and codes are those of every other API view.

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return super().dispatch(request, *args, **kwargs)  # 405 / OPTIONS, as DRF answers them
        self.args, self.kwargs = args, kwargs
        try:
            return self._receive(request, kwargs.get("trigger_id"))
        except Exception as exc:
            return self._error_response(request, exc)

    def _receive(self, request: HttpRequest, trigger_id: str | None) -> HttpResponse:
        remembered = self._remembered(request, trigger_id)
        if remembered is not None:  # the body _fired gives, without JsonResponse's encoder set-up
            body = {"execution_id": str(remembered.execution_id), "invocation_id": str(remembered.pk),
                    "status": remembered.status}
            return HttpResponse(json.dumps(body), content_type="application/json", status=202)
        # NOTE: the trigger is looked up before the body is read, so an unknown trigger is a
        # 404 whatever the body, and an oversize delivery to a real one is still recorded.
        trigger = webhook_trigger_for_delivery(trigger_id)
        if trigger is None:
            raise TriggerNotFound(f"No active webhook trigger with id {trigger_id}.")
        try:
            body = request.body  # applies DATA_UPLOAD_MAX_MEMORY_SIZE
        except RequestDataTooBig:
            webhook_record_too_large(trigger=trigger, request=self._delivery(request, b""),
                                     limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        invocation = webhook_receive(trigger=trigger, request=self._delivery(request, body))
        data, code = _fired(invocation)
        return JsonResponse(data, status=code)

    def _remembered(self, request: HttpRequest, trigger_id: str | None):
        """A delivery to a trigger this process knows, accepted in one statement; else None."""
        entry = webhook_fast_path.remembered(trigger_id)
        if entry is None:
            return None
        try:
            body = request.body
        except RequestDataTooBig:
            return None
        return webhook_receive_remembered(entry=entry, request=self._delivery(request, body))

    def _error_response(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        """The response DRF's dispatch would give for ``exc`` (the project's exception handler)."""
        self.request = self.initialize_request(request, *self.args, **self.kwargs)
        self.headers = self.default_response_headers
        response = self.handle_exception(exc)
        return self.finalize_response(self.request, response, *self.args, **self.kwargs)

    @staticmethod
    def _delivery(request: HttpRequest, body: bytes) -> WebhookRequest:
        meta = request.META
        # Only the Standard Webhooks headers are read: no need to build request.headers.
        headers = {name: meta[key] for name, key in _WEBHOOK_HEADER_KEYS if key in meta}
        return WebhookRequest(
            headers=headers, body=body, remote_addr=meta.get("REMOTE_ADDR", ""),
            content_type=meta.get("CONTENT_TYPE", ""), content_length=meta.get("CONTENT_LENGTH", ""),
        )

    @extend_schema(
        operation_id="webhooks_receive", tags=["webhooks"], auth=[],
        parameters=[
            OpenApiParameter("trigger_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="WEBHOOK trigger id."),
            OpenApiParameter(HEADER_ID, str, OpenApiParameter.HEADER, required=True,
                             description="Unique per delivery (no '.'); a repeated id starts nothing new."),
            OpenApiParameter(HEADER_TIMESTAMP, int, OpenApiParameter.HEADER, required=True,
                             description="Unix seconds; accepted within 5 minutes of the server's clock."),
            OpenApiParameter(HEADER_SIGNATURE, str, OpenApiParameter.HEADER, required=True,
                             description='Space-separated "v1,<base64 HMAC-SHA256>" over "{id}.{timestamp}.{body}".'),
        ],
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            202: TriggerFiredSerializer,
            200: OpenApiResponse(TriggerFiredSerializer, description="Repeated webhook-id: the first delivery's run."),
            **error_responses(400, 401, 404, 409, 413, 422),
        },
        examples=[OpenApiExample("accepted", response_only=True, status_codes=["202"],
                                 value={"execution_id": "5b0c7c8e-…", "invocation_id": "0f1e…", "status": "ACCEPTED"})],
        description="Body keys that are variable names become inputs (plus the trigger's `input_mapping`); the whole "
                    "body is `trigger.payload`. Every delivery is recorded as an invocation.",
    )
    def post(self, request: Request, trigger_id: str) -> HttpResponse:
        # Documents the endpoint; ``dispatch`` answers POSTs without reaching it.
        return self._receive(request._request, trigger_id)


class EventEmitApi(BaseApi):
    """Custom events of the signed-in owner: delivered at once to the owner's EVENT triggers."""

    @extend_schema(
        operation_id="events_emit", tags=["events"], request=EventEmitInputSerializer,
        parameters=[OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER, required=False,
                                     description="Repeat an emission safely: a key already used with this event "
                                                 "name starts nothing new (matched entries say DUPLICATE).")],
        responses={202: EventEmittedSerializer, **error_responses(400, 401)},
        examples=[OpenApiExample(
            "matched", response_only=True, status_codes=["202"],
            value={"event": "order.created", "event_id": "9b2f…", "matched": [
                {"trigger_id": "3f2c…", "invocation_id": "0f1e…", "execution_id": "5b0c…", "status": "ACCEPTED",
                 "error": ""}]},
        )],
        description="Starts every one of your active EVENT triggers whose `config.event` is `name` and whose "
                    "`config.filter` holds on `payload`; each run gets `{\"event\": name, **payload}` as "
                    "`trigger.payload`. Names starting with `execution.` are reserved for the platform.",
    )
    def post(self, request: Request) -> Response:
        data = validated_data(EventEmitInputSerializer, request)
        event, matches = event_emit(owner=request.user, name=data["name"], payload=data.get("payload"),
                                    idempotency_key=idempotency_key(request))
        body = {"event": event.name, "event_id": event.event_id, "matched": [vars(m) for m in matches]}
        return Response(EventEmittedSerializer(body).data, status=status.HTTP_202_ACCEPTED)
