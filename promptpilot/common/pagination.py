"""Page-numbered lists: the API's paginator, its schema and its response."""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .errors import ValidationFailed

MAX_PAGE_SIZE = 200

class DefaultPagination(PageNumberPagination):
    """DRF's page numbers, with bad values answered 400 (DRF ignores a bad page_size and
    answers 404 for page=0) so that clients learn what to change."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    @staticmethod
    def _whole_number(request: Request, name: str, maximum: int | None) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        limits = f"from 1 to {maximum}" if maximum else "from 1"
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= (maximum or int(raw)):
            raise ValidationFailed(
                f'"{raw[:40]}" is not a valid {name}; use a whole number {limits}.',
                {"errors": {name: [f"A whole number {limits}."]}},
            )
        return int(raw)

    def get_page_size(self, request: Request) -> int:
        return self._whole_number(request, self.page_size_query_param, self.max_page_size) or self.page_size

    def paginate_queryset(self, queryset, request: Request, view=None):
        self._whole_number(request, self.page_query_param, None)
        return super().paginate_queryset(queryset, request, view=view)


def paginated_serializer(serializer_class: type[serializers.Serializer], name: str) -> serializers.Serializer:
    """The schema of a page of ``serializer_class`` (``count``, ``next``, ``previous``, ``results``)."""
    return inline_serializer(
        name,
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )


def paginated_response(
    *, request: Request, view: APIView, queryset: QuerySet, serializer_class: type[serializers.Serializer]
) -> Response:
    """The page of ``queryset`` the request asks for (``page``, ``page_size``), serialized."""
    paginator = DefaultPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True, context={"request": request}).data)
