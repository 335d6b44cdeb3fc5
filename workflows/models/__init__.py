from .enums import ExecutionStatus, StepExecutionStatus, StepType, TriggerType, VariableType
from .execution import WorkflowExecution, WorkflowStepExecution
from .http_credential import HttpCredential
from .prompt import Prompt
from .step import WorkflowStep
from .workflow import Workflow, WorkflowVariable, WorkflowVersion

__all__ = [
    "ExecutionStatus",
    "HttpCredential",
    "Prompt",
    "StepExecutionStatus",
    "StepType",
    "TriggerType",
    "VariableType",
    "Workflow",
    "WorkflowExecution",
    "WorkflowStep",
    "WorkflowStepExecution",
    "WorkflowVariable",
    "WorkflowVersion",
]
