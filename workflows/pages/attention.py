"""/attention/: runs and trigger deliveries that need someone (``attention_selectors``),
with the reason, links to the run or trigger page, and dismiss buttons. Retry posts to
the execution page's own retry view (one retry implementation). Owners see their own
items, staff everyone's; another user's id answers 404."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from promptpilot.common.errors import ApplicationError
from triggers.models import TriggerInvocation

from .. import attention_selectors
from ..models import WorkflowExecution
from ..page_selectors import visible_to
from ..services import attention as attention_services

LIST_PATH = "/attention/"


@login_required
@require_GET
def attention_list_page(request: HttpRequest) -> HttpResponse:
    return render(request, "attention/list.html", {
        "items": attention_selectors.attention_page_items(request.user),
        "show_owner": request.user.is_staff,
    })


def _visible_or_404(request: HttpRequest, queryset, owner: str, id):
    found = visible_to(request.user, queryset, owner=owner).filter(pk=id).first()
    if found is None:
        raise Http404(f"No item with id {id} among yours.")
    return found


def _dismissed(request: HttpRequest, dismiss, **target) -> HttpResponse:
    try:
        dismiss(user=request.user, **target)
    except ApplicationError as exc:
        messages.error(request, f"Not dismissed: {exc.message}")
    else:
        messages.success(request, "Dismissed: it no longer needs attention.")
    return redirect(LIST_PATH)


@login_required
@require_POST
def execution_dismiss(request: HttpRequest, id: str) -> HttpResponse:
    execution = _visible_or_404(request, WorkflowExecution.objects.all(), "workflow__owner", id)
    return _dismissed(request, attention_services.execution_dismiss, execution=execution)


@login_required
@require_POST
def invocation_dismiss(request: HttpRequest, id: str) -> HttpResponse:
    invocation = _visible_or_404(request, TriggerInvocation.objects.all(), "trigger__workflow__owner", id)
    return _dismissed(request, attention_services.invocation_dismiss, invocation=invocation)
