"""``{% page_query n %}``: the link to page ``n`` of a paged list, keeping its filters."""
from __future__ import annotations

from urllib.parse import urlencode

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def page_query(context: template.Context, number: int) -> str:
    """``?<the request's other non-empty parameters>&page=<number>`` (escaped by the template)."""
    params = {key: value for key, value in context["request"].GET.items() if key != "page" and value}
    return "?" + urlencode({**params, "page": number})
