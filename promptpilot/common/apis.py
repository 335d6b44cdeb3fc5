"""Project-wide endpoints (API token login, liveness, JSON error pages for /api/) and the
helpers every app's API views share: ``BaseApi``, the error body of the schema, request
validation and the ``Idempotency-Key`` header."""
from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import authenticate
from django.http import HttpRequest, JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema, inline_serializer
from knox.models import AuthToken
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import readiness
from .errors import ApplicationError, ValidationFailed
from .fields import StrictCharField
from .throttling import credential_failure_record, credential_failures_check

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255

ERROR_BODY = inline_serializer(
    "Error",
    {
        "message": serializers.CharField(help_text="A sentence saying what to change."),
        "code": serializers.CharField(),
        "extra": serializers.DictField(help_text="e.g. errors keyed by field path."),
    },
)


def error_responses(*codes: int) -> dict[int, Any]:
    """``extend_schema(responses=...)`` entries: each status code answers the error body."""
    return {code: ERROR_BODY for code in codes}


def validated_data(serializer_class: type[serializers.Serializer], request: Request, *, partial: bool = False) -> dict:
    """The request body checked by ``serializer_class``; invalid data raises (rendered as 400)."""
    serializer = serializer_class(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, stripped; None when absent or blank."""
    key = (request.headers.get(IDEMPOTENCY_HEADER) or "").strip()
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValidationFailed(
            f"The {IDEMPOTENCY_HEADER} header is {len(key)} characters long; use at most {IDEMPOTENCY_KEY_MAX_LENGTH}.",
            {"errors": {IDEMPOTENCY_HEADER: [f"At most {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]}},
        )
    return key or None


class BaseApi(APIView):
    """Base for JSON API views.

    DRF's JSONParser reads the request stream directly, which skips Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE check; reading ``request.body`` first applies it, so an
    oversize body raises RequestDataTooBig (rendered as 413) before any parsing.
    """

    def initial(self, request: Request, *args, **kwargs) -> None:
        if request.method in ("POST", "PUT", "PATCH"):
            request._request.body  # noqa: B018  (enforces the size limit; the body is cached for the parser)
        super().initial(request, *args, **kwargs)


class InvalidCredentials(ApplicationError):
    status_code = 400
    code = "invalid_credentials"


class AuthTokenInputSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class AuthTokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()
    expiry = serializers.DateTimeField(allow_null=True)


class AuthTokenApi(BaseApi):
    """Exchange a username and password for an API token (knox: stored hashed)."""

    # A stale or broken Authorization header must not stop anyone from logging in.
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_token_create",
        tags=["auth"],
        request=AuthTokenInputSerializer,
        responses={200: AuthTokenOutputSerializer, **error_responses(400, 429)},
        description="Wrong credentials answer 400. Failed tries are counted per account and per client "
                    "address; past the limit every try answers 429 with Retry-After.",
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = AuthTokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        credential_failures_check(request, kind="login", target=username, what="this account")
        user = authenticate(request._request, username=username, password=data.validated_data["password"])
        if user is None or not user.is_active:
            credential_failure_record(request, kind="login", target=username)
            raise InvalidCredentials("Unable to log in with the username and password given; check them and try again.")
        instance, token = AuthToken.objects.create(user)
        logger.info("auth.token_created", extra={"user_id": user.pk})
        return Response(AuthTokenOutputSerializer({"token": token, "expiry": instance.expiry}).data)


def _probe_response(body: dict, *, ready: bool) -> JsonResponse:
    response = JsonResponse(body, status=200 if ready else 503)
    # A failing probe is logged once per change by readiness.ProbeLog; without this flag
    # django.request would add an ERROR "Service Unavailable" line at every probe.
    response._has_been_logged = True
    return response


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers and the database takes a query. 503 otherwise."""
    database = readiness.liveness_check().parts["database"]
    if database.state != readiness.OK:
        return _probe_response({"status": "error", "database": f"error: {database.detail}"}, ready=False)
    return _probe_response({"status": "ok", "database": "ok"}, ready=True)


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database, the broker and at least one worker answer. 503 otherwise,
    naming each part and its state (promptpilot/common/readiness.py)."""
    report = readiness.readiness_check()
    return _probe_response(report.as_json(), ready=report.ready)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None):
    """JSON 404 under /api/ (unknown paths), Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(
            {"message": f"No API endpoint at {request.path}; see /api/docs/ for the list.", "code": "not_found",
             "extra": {}},
            status=status.HTTP_404_NOT_FOUND,
        )
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception | None = None):
    if _is_api(request):
        return JsonResponse(
            {"message": "The request was rejected as malformed.", "code": "bad_request", "extra": {}},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest):
    if _is_api(request):
        return JsonResponse(
            {"message": "Something went wrong on our side. Try again.", "code": "server_error", "extra": {}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return defaults.server_error(request)

