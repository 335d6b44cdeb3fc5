"""Execution pages, mounted at /executions/ (see promptpilot/urls.py)."""
from django.urls import path

from .pages import executions as pages

app_name = "executions"

urlpatterns = [
    path("", pages.execution_list_page, name="list"),
    path("<uuid:id>/", pages.execution_detail_page, name="detail"),
    path("<uuid:id>/live", pages.execution_live_partial, name="live"),
    path("<uuid:id>/cancel", pages.execution_cancel, name="cancel"),
    path("<uuid:id>/retry", pages.execution_retry, name="retry"),
    path("<uuid:id>/approve", pages.execution_approve, name="approve"),
    path("<uuid:id>/reject", pages.execution_reject, name="reject"),
    path("awaiting-approval/", pages.awaiting_approval_page, name="awaiting"),
]
