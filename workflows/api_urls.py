"""/api/ routes of the workflows app. Every path answers with or without a trailing slash."""
from django.urls import re_path

from . import apis

app_name = "workflows_api"

# Ids are matched loosely and checked by the selectors, so a malformed id answers a JSON 404.
ID = r"(?P<id>[^/]+)"
NUMBER = r"(?P<number>[^/]+)"

urlpatterns = [
    re_path(r"^prompts/?$", apis.PromptListCreateApi.as_view(), name="prompt-list"),
    re_path(rf"^prompts/{ID}/?$", apis.PromptDetailApi.as_view(), name="prompt-detail"),
    re_path(r"^workflows/?$", apis.WorkflowListCreateApi.as_view(), name="workflow-list"),
    re_path(rf"^workflows/{ID}/?$", apis.WorkflowDetailApi.as_view(), name="workflow-detail"),
    re_path(rf"^workflows/{ID}/execute/?$", apis.WorkflowExecuteApi.as_view(), name="workflow-execute"),
    re_path(rf"^workflows/{ID}/preview/?$", apis.WorkflowPreviewApi.as_view(), name="workflow-preview"),
    re_path(rf"^workflows/{ID}/versions/?$", apis.WorkflowVersionListApi.as_view(), name="workflow-version-list"),
    re_path(rf"^workflows/{ID}/versions/{NUMBER}/?$", apis.WorkflowVersionDetailApi.as_view(),
            name="workflow-version-detail"),
    re_path(rf"^workflows/{ID}/versions/{NUMBER}/restore/?$", apis.WorkflowVersionRestoreApi.as_view(),
            name="workflow-version-restore"),
    re_path(r"^executions/?$", apis.ExecutionListApi.as_view(), name="execution-list"),
    re_path(rf"^executions/{ID}/?$", apis.ExecutionDetailApi.as_view(), name="execution-detail"),
    re_path(rf"^executions/{ID}/steps/(?P<step>[^/]+)/items/?$", apis.ExecutionStepItemsApi.as_view(),
            name="execution-step-items"),
    re_path(rf"^executions/{ID}/cancel/?$", apis.ExecutionCancelApi.as_view(), name="execution-cancel"),
    re_path(rf"^executions/{ID}/retry/?$", apis.ExecutionRetryApi.as_view(), name="execution-retry"),
    re_path(rf"^executions/{ID}/approve/?$", apis.ExecutionApproveApi.as_view(), name="execution-approve"),
    re_path(rf"^executions/{ID}/reject/?$", apis.ExecutionRejectApi.as_view(), name="execution-reject"),
    re_path(r"^approvals/?$", apis.ApprovalLinkOpenApi.as_view(), name="approval-link-open"),
    re_path(r"^approvals/decide/?$", apis.ApprovalLinkDecideApi.as_view(), name="approval-link-decide"),
]
