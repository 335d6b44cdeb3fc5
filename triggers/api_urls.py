"""/api/ routes of the triggers app. Every path answers with or without a trailing slash."""
from django.urls import re_path

from . import apis

app_name = "triggers_api"

# Ids are matched loosely and checked by the selectors, so a malformed id answers a JSON 404.
ID = r"(?P<id>[^/]+)"

urlpatterns = [
    re_path(r"^webhooks/(?P<trigger_id>[^/]+)/?$", apis.WebhookReceiveApi.as_view(), name="webhook"),  # busiest first
    re_path(r"^triggers/?$", apis.TriggerListCreateApi.as_view(), name="trigger-list"),
    re_path(rf"^triggers/{ID}/?$", apis.TriggerDetailApi.as_view(), name="trigger-detail"),
    re_path(rf"^triggers/{ID}/execute/?$", apis.TriggerExecuteApi.as_view(), name="trigger-execute"),
    re_path(rf"^triggers/{ID}/rotate-secret/?$", apis.TriggerRotateSecretApi.as_view(), name="trigger-rotate-secret"),
    re_path(rf"^triggers/{ID}/invocations/?$", apis.TriggerInvocationListApi.as_view(), name="trigger-invocations"),
    re_path(r"^events/?$", apis.EventEmitApi.as_view(), name="event-emit"),
]
