"""Domain events of the workflows app, sent after the change that causes them commits."""
from django.dispatch import Signal

# Sent with ``execution`` (a WorkflowExecution) once it has ended COMPLETED, FAILED or
# CANCELLED. The triggers app turns this into the execution.completed/failed events.
execution_finished = Signal()
