"""The needs-attention page, mounted at /attention/ (see promptpilot/urls.py)."""
from django.urls import path

from .pages import attention as pages

app_name = "attention"

urlpatterns = [
    path("", pages.attention_list_page, name="list"),
    path("executions/<uuid:id>/dismiss", pages.execution_dismiss, name="dismiss-execution"),
    path("invocations/<uuid:id>/dismiss", pages.invocation_dismiss, name="dismiss-invocation"),
]
