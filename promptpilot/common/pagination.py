"""Page-numbered lists: the API's paginator, its schema and its response."""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class DefaultPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


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
