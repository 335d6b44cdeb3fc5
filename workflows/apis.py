"""REST API of prompts, workflows (with versions), runs and previews (DESIGN §7).

Views are thin: parse, call one selector or service, serialize, respond. Ownership is
enforced by the selectors: another user's id answers 404, exactly like a missing one.
"""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from promptpilot.common.apis import IDEMPOTENCY_HEADER, BaseApi, error_responses, idempotency_key, validated_data
from promptpilot.common.pagination import paginated_response, paginated_serializer

from . import selectors
from .models import ExecutionStatus
from .serializers import (
    ApprovalDecisionSerializer,
    ApprovalLinkDecisionSerializer,
    ApprovalLinkOpenSerializer,
    ApprovalLinkSerializer,
    ExecuteInputSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    PreviewInputSerializer,
    PreviewOutputSerializer,
    PromptInputSerializer,
    PromptOutputSerializer,
    StepExecutionSerializer,
    WorkflowInputSerializer,
    WorkflowOutputSerializer,
    WorkflowVersionSerializer,
)
from .services import approvals as approval_services
from .services import executions as execution_services
from .services import preview as preview_services
from .services import workflows as workflow_services


def _path_id(name: str, kind: type, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.PATH, description=description)


WORKFLOW_ID = _path_id("id", int, "Workflow id.")
PROMPT_ID = _path_id("id", int, "Prompt id.")
EXECUTION_ID = _path_id("id", OpenApiTypes.UUID, "Execution id.")
VERSION_NUMBER = _path_id("number", int, "Version number.")


# --- prompts -------------------------------------------------------------------------

class PromptListCreateApi(BaseApi):
    @extend_schema(operation_id="prompts_list", tags=["prompts"],
                   responses=paginated_serializer(PromptOutputSerializer, "PaginatedPromptList"))
    def get(self, request: Request) -> Response:
        return paginated_response(
            request=request, view=self, queryset=selectors.prompt_list(request.user),
            serializer_class=PromptOutputSerializer,
        )

    @extend_schema(
        operation_id="prompts_create", tags=["prompts"], request=PromptInputSerializer,
        responses={201: PromptOutputSerializer, **error_responses(400)},
    )
    def post(self, request: Request) -> Response:
        data = validated_data(PromptInputSerializer, request)
        prompt = workflow_services.prompt_create(owner=request.user, data=data)
        return Response(PromptOutputSerializer(prompt).data, status=status.HTTP_201_CREATED)


class PromptDetailApi(BaseApi):
    @extend_schema(operation_id="prompts_retrieve", tags=["prompts"], parameters=[PROMPT_ID],
                   responses={200: PromptOutputSerializer, **error_responses(404)})
    def get(self, request: Request, id: str) -> Response:
        return Response(PromptOutputSerializer(selectors.prompt_get(request.user, id)).data)

    def _update(self, request: Request, id: str, *, partial: bool) -> Response:
        prompt = selectors.prompt_get(request.user, id)
        data = validated_data(PromptInputSerializer, request, partial=partial)
        prompt = workflow_services.prompt_update(prompt=prompt, data=data, user=request.user)
        return Response(PromptOutputSerializer(prompt).data)

    @extend_schema(operation_id="prompts_update", tags=["prompts"], parameters=[PROMPT_ID], request=PromptInputSerializer,
                   responses={200: PromptOutputSerializer, **error_responses(400, 404)})
    def put(self, request: Request, id: str) -> Response:
        return self._update(request, id, partial=False)

    @extend_schema(operation_id="prompts_partial_update", tags=["prompts"], parameters=[PROMPT_ID],
                   request=PromptInputSerializer, responses={200: PromptOutputSerializer, **error_responses(400, 404)})
    def patch(self, request: Request, id: str) -> Response:
        return self._update(request, id, partial=True)

    @extend_schema(operation_id="prompts_destroy", tags=["prompts"], parameters=[PROMPT_ID],
                   responses={204: None, **error_responses(404, 409)})
    def delete(self, request: Request, id: str) -> Response:
        workflow_services.prompt_delete(prompt=selectors.prompt_get(request.user, id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- workflows -----------------------------------------------------------------------

def _saved(workflow) -> dict:
    """A written workflow, with the save-time check's warnings (``[]`` when none)."""
    return {**WorkflowOutputSerializer(workflow).data, "warnings": list(getattr(workflow, "definition_warnings", []))}


class WorkflowListCreateApi(BaseApi):
    @extend_schema(operation_id="workflows_list", tags=["workflows"],
                   responses=paginated_serializer(WorkflowOutputSerializer, "PaginatedWorkflowList"))
    def get(self, request: Request) -> Response:
        return paginated_response(
            request=request, view=self, queryset=selectors.workflow_list(request.user),
            serializer_class=WorkflowOutputSerializer,
        )

    @extend_schema(operation_id="workflows_create", tags=["workflows"], request=WorkflowInputSerializer,
                   responses={201: WorkflowOutputSerializer, **error_responses(400)})
    def post(self, request: Request) -> Response:
        data = validated_data(WorkflowInputSerializer, request)
        workflow = workflow_services.workflow_create(owner=request.user, data=data)
        return Response(_saved(workflow), status=status.HTTP_201_CREATED)


class WorkflowDetailApi(BaseApi):
    @extend_schema(operation_id="workflows_retrieve", tags=["workflows"], parameters=[WORKFLOW_ID],
                   responses={200: WorkflowOutputSerializer, **error_responses(404)})
    def get(self, request: Request, id: str) -> Response:
        return Response(WorkflowOutputSerializer(selectors.workflow_get(request.user, id)).data)

    def _update(self, request: Request, id: str, *, partial: bool) -> Response:
        workflow = selectors.workflow_get(request.user, id)
        data = validated_data(WorkflowInputSerializer, request, partial=partial)
        workflow = workflow_services.workflow_update(workflow=workflow, data=data, user=request.user)
        return Response(_saved(workflow))

    @extend_schema(
        operation_id="workflows_update", tags=["workflows"], parameters=[WORKFLOW_ID], request=WorkflowInputSerializer,
        responses={200: WorkflowOutputSerializer, **error_responses(400, 404)},
        description="`name` is required; other left-out fields keep their values. `variables` and `steps`, "
                    "when given, replace the whole lists.",
    )
    def put(self, request: Request, id: str) -> Response:
        return self._update(request, id, partial=False)

    @extend_schema(operation_id="workflows_partial_update", tags=["workflows"], parameters=[WORKFLOW_ID],
                   request=WorkflowInputSerializer,
                   responses={200: WorkflowOutputSerializer, **error_responses(400, 404)})
    def patch(self, request: Request, id: str) -> Response:
        return self._update(request, id, partial=True)

    @extend_schema(operation_id="workflows_destroy", tags=["workflows"], parameters=[WORKFLOW_ID],
                   responses={204: None, **error_responses(404, 409)})
    def delete(self, request: Request, id: str) -> Response:
        workflow_services.workflow_delete(workflow=selectors.workflow_get(request.user, id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WorkflowVersionListApi(BaseApi):
    @extend_schema(operation_id="workflows_versions_list", tags=["workflows"], parameters=[WORKFLOW_ID],
                   responses={200: paginated_serializer(WorkflowVersionSerializer, "PaginatedWorkflowVersionList"),
                              **error_responses(404)})
    def get(self, request: Request, id: str) -> Response:
        workflow = selectors.workflow_get(request.user, id)
        return paginated_response(
            request=request, view=self, queryset=selectors.workflow_version_list(workflow),
            serializer_class=WorkflowVersionSerializer,
        )


class WorkflowVersionDetailApi(BaseApi):
    @extend_schema(operation_id="workflows_versions_retrieve", tags=["workflows"], parameters=[WORKFLOW_ID, VERSION_NUMBER],
                   responses={200: WorkflowVersionSerializer, **error_responses(404)})
    def get(self, request: Request, id: str, number: str) -> Response:
        workflow = selectors.workflow_get(request.user, id)
        return Response(WorkflowVersionSerializer(selectors.workflow_version_get(workflow, number)).data)


class WorkflowVersionRestoreApi(BaseApi):
    @extend_schema(
        operation_id="workflows_versions_restore", tags=["workflows"], parameters=[WORKFLOW_ID, VERSION_NUMBER],
        request=None, responses={200: WorkflowOutputSerializer, **error_responses(400, 404)},
        description='Rebuild variables and steps from version `number`; records a new version "restored from vN".',
    )
    def post(self, request: Request, id: str, number: str) -> Response:
        workflow = selectors.workflow_get(request.user, id)
        workflow = workflow_services.workflow_version_restore(workflow=workflow, number=number, user=request.user)
        return Response(_saved(workflow))


def _execution_location(execution) -> str:
    path = reverse("workflows_api:execution-detail", kwargs={"id": execution.pk})
    return path if path.endswith("/") else path + "/"  # reverse() drops the optional slash of "/?$"


class WorkflowExecuteApi(BaseApi):
    @extend_schema(
        operation_id="workflows_execute", tags=["executions"], parameters=[
            WORKFLOW_ID,
            OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER, required=False,
                             description="Repeat a request safely: a key already used for this workflow answers "
                                         "200 with the first execution and starts nothing."),
        ],
        request=ExecuteInputSerializer,
        responses={
            202: ExecutionSerializer,
            200: OpenApiResponse(ExecutionSerializer, description="Replay of an Idempotency-Key already used."),
            **error_responses(400, 404, 409),
        },
    )
    def post(self, request: Request, id: str) -> Response:
        workflow = selectors.workflow_get(request.user, id)
        data = validated_data(ExecuteInputSerializer, request)
        execution = execution_services.execution_start(
            workflow=workflow,
            inputs=data.get("input") or {},
            trigger_type="MANUAL",
            started_by=request.user,
            idempotency_key=idempotency_key(request),
        )
        replayed = bool(getattr(execution, "was_replayed", False))
        return Response(
            ExecutionSerializer(execution).data,
            status=status.HTTP_200_OK if replayed else status.HTTP_202_ACCEPTED,
            headers={"Location": _execution_location(execution)},
        )


class WorkflowPreviewApi(BaseApi):
    @extend_schema(
        operation_id="workflows_preview", tags=["workflows"], parameters=[WORKFLOW_ID],
        request=PreviewInputSerializer, responses={200: PreviewOutputSerializer, **error_responses(400, 404)},
        description="Run the saved definition in-process; nothing is persisted (no execution, step or "
                    "invocation row, no Celery message). See docs/API.md#preview for the options.",
    )
    def post(self, request: Request, id: str) -> Response:
        workflow = selectors.workflow_get(request.user, id, definition=False)  # the preview reads the version
        data = validated_data(PreviewInputSerializer, request)
        result = preview_services.workflow_preview(
            workflow=workflow,
            user=request.user,
            inputs=data.get("input") or {},
            use_sample_data=data.get("use_sample_data", False),
            trigger=dict(data["trigger"]) if data.get("trigger") else None,
            dry_run_models=data.get("dry_run_models", False),
            until=data.get("until"),
            steps_output=data.get("steps_output") or {},
            from_execution=data.get("from_execution"),
            approvals=data.get("approvals") or {},
        )
        return Response(result)


# --- executions ----------------------------------------------------------------------

class ExecutionListApi(BaseApi):
    @extend_schema(
        operation_id="executions_list", tags=["executions"],
        parameters=[
            OpenApiParameter("workflow", int, description="Only runs of this workflow."),
            OpenApiParameter("status", str, enum=list(ExecutionStatus.values),
                             description="Only runs in this status (several: comma separated)."),
        ],
        responses={200: paginated_serializer(ExecutionSerializer, "PaginatedExecutionList"), **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        queryset = selectors.execution_list(
            request.user, workflow=request.query_params.get("workflow"), status=request.query_params.get("status")
        )
        return paginated_response(request=request, view=self, queryset=queryset, serializer_class=ExecutionSerializer)


def _detail(request: Request, execution_id) -> dict:
    """An execution as its owner reads it (signed approval links included)."""
    execution = selectors.execution_get(request.user, execution_id)
    return ExecutionDetailSerializer(execution, context={"request": request}).data


class ExecutionDetailApi(BaseApi):
    @extend_schema(operation_id="executions_retrieve", tags=["executions"], parameters=[EXECUTION_ID],
                   responses={200: ExecutionDetailSerializer, **error_responses(404)})
    def get(self, request: Request, id: str) -> Response:
        return Response(_detail(request, id))


class ExecutionStepItemsApi(BaseApi):
    @extend_schema(
        operation_id="executions_step_items", tags=["executions"],
        parameters=[EXECUTION_ID, OpenApiParameter("step", str, OpenApiParameter.PATH, description="The MAP step's name.")],
        responses={200: paginated_serializer(StepExecutionSerializer, "PaginatedStepItemList"),
                   **error_responses(400, 404)},
        description="The item rows of a MAP step, in item order (page, page_size up to 200).",
    )
    def get(self, request: Request, id: str, step: str) -> Response:
        execution = selectors.execution_get(request.user, id)
        return paginated_response(request=request, view=self, queryset=selectors.step_items(execution, step),
                                  serializer_class=StepExecutionSerializer)


class ExecutionCancelApi(BaseApi):
    @extend_schema(operation_id="executions_cancel", tags=["executions"], parameters=[EXECUTION_ID], request=None,
                   responses={200: ExecutionDetailSerializer, **error_responses(404, 409)})
    def post(self, request: Request, id: str) -> Response:
        execution = selectors.execution_get(request.user, id)
        execution = execution_services.execution_cancel(execution=execution, user=request.user)
        # Read again: cancelling changed step rows that the first read had prefetched.
        return Response(_detail(request, execution.pk))


class ExecutionRetryApi(BaseApi):
    @extend_schema(
        operation_id="executions_retry", tags=["executions"], parameters=[EXECUTION_ID], request=None,
        responses={202: ExecutionDetailSerializer, **error_responses(404, 409)},
        description="Start a new run (trigger_type RETRY) from the failed step, reusing earlier outputs.",
    )
    def post(self, request: Request, id: str) -> Response:
        execution = selectors.execution_get(request.user, id)
        retry = execution_services.execution_retry(execution=execution, user=request.user)
        return Response(
            ExecutionDetailSerializer(selectors.execution_get(request.user, retry.pk)).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": _execution_location(retry)},
        )


class _ExecutionDecideApi(BaseApi):
    approved: bool

    def post(self, request: Request, id: str) -> Response:
        execution = selectors.execution_get(request.user, id)
        data = validated_data(ApprovalDecisionSerializer, request)
        approval_services.approval_decide(
            execution=execution, approved=self.approved, decided_by=request.user.get_username(),
            step=data.get("step") or None, comment=data.get("comment") or "", data=data.get("data"),
        )
        return Response(_detail(request, execution.pk))


DECIDE_DESCRIPTION = (
    "Decide the run's waiting APPROVAL step (`step` names it when several could wait); `data` is checked "
    "against the step's `form`. The run goes on at once. A step that no longer waits (decided already, "
    "by this or the other verb) answers 409."
)


class ExecutionApproveApi(_ExecutionDecideApi):
    approved = True

    @extend_schema(operation_id="executions_approve", tags=["executions"], parameters=[EXECUTION_ID],
                   request=ApprovalDecisionSerializer, description=DECIDE_DESCRIPTION,
                   responses={200: ExecutionDetailSerializer, **error_responses(400, 404, 409)})
    def post(self, request: Request, id: str) -> Response:
        return super().post(request, id)


class ExecutionRejectApi(_ExecutionDecideApi):
    approved = False

    @extend_schema(operation_id="executions_reject", tags=["executions"], parameters=[EXECUTION_ID],
                   request=ApprovalDecisionSerializer, description=DECIDE_DESCRIPTION,
                   responses={200: ExecutionDetailSerializer, **error_responses(400, 404, 409)})
    def post(self, request: Request, id: str) -> Response:
        return super().post(request, id)


def _link_view(row) -> dict:
    output = row.output if isinstance(row.output, dict) else {}
    return ApprovalLinkSerializer({
        "workflow": row.execution.workflow.name, "step": row.step_name, "message": output.get("message") or "",
        "form": output.get("form") or [], "expires_at": output.get("expires_at"), "status": row.status,
    }).data


class ApprovalLinkOpenApi(BaseApi):
    """Signed approval links: the token is the credential (no account, no CSRF cookie)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="approvals_open", tags=["executions"], request=ApprovalLinkOpenSerializer,
                   description="What a signed approval link shows (the token is the part of the link after #).",
                   responses={200: ApprovalLinkSerializer, **error_responses(400, 404, 409, 410)})
    def post(self, request: Request) -> Response:
        data = validated_data(ApprovalLinkOpenSerializer, request)
        return Response(_link_view(approval_services.approval_from_token(data["token"])))


class ApprovalLinkDecideApi(ApprovalLinkOpenApi):
    @extend_schema(operation_id="approvals_decide", tags=["executions"], request=ApprovalLinkDecisionSerializer,
                   description="Decide with a signed link: one use; expires with the step.",
                   responses={200: ApprovalLinkSerializer, **error_responses(400, 404, 409, 410)})
    def post(self, request: Request) -> Response:
        data = validated_data(ApprovalLinkDecisionSerializer, request)
        row = approval_services.approval_decide_by_token(
            token=data["token"], approved=data["approved"], comment=data.get("comment") or "",
            data=data.get("data"), name=data.get("name") or "")
        return Response(_link_view(row))
