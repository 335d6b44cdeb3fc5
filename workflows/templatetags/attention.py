"""``{% attention_summary %}``: the admin index's needs-attention counts, by reason."""
from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.http import urlencode

from ..attention_selectors import AttentionReason, attention_counts

register = template.Library()


@register.inclusion_tag("admin/attention_summary.html")
def attention_summary() -> dict:
    counts = attention_counts()
    executions = reverse("admin:workflows_workflowexecution_changelist")
    invocations = reverse("admin:triggers_triggerinvocation_changelist")
    rows = [{
        "reason": reason, "count": counts[reason.value],
        "url": f"{invocations if reason == AttentionReason.TRIGGER_REJECTED else executions}?"
               f"{urlencode({'attention': reason.value})}",
    } for reason in AttentionReason]
    return {"rows": rows, "total": sum(counts.values())}
