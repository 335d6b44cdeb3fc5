"""Business-rule errors of the workflows domain (rendered by the API as JSON)."""
from promptpilot.common.errors import ApplicationError, Conflict, NotFound, ValidationFailed


class InputValidationFailed(ValidationFailed):
    """``extra = {"errors": {variable_name: message}}`` names every offending variable."""

    code = "invalid_input"


class DefinitionInvalid(ValidationFailed):
    code = "invalid_definition"


class WorkflowInactive(Conflict):
    code = "workflow_inactive"


class ExecutionFinished(Conflict):
    code = "execution_finished"


class ExecutionNotRetryable(Conflict):
    code = "execution_not_retryable"


class VersionNotFound(NotFound):
    code = "version_not_found"


class ApprovalNotWaiting(Conflict):
    """No approval waits on this run (decided already, or the run moved on, or ended)."""

    code = "approval_not_waiting"


class ApprovalLinkInvalid(NotFound):
    """A signed approval link that does not verify (tampered, truncated, from another server)."""

    code = "approval_link_invalid"


class ApprovalLinkExpired(ApplicationError):
    status_code = 410
    code = "approval_link_expired"


class AttentionNotNeeded(Conflict):
    """Dismiss refused: the item is not (or no longer) on the needs-attention list."""

    code = "attention_not_needed"
