"""Domain events of the workflows app, sent after the change that causes them commits."""
from django.dispatch import Signal

# Sent with ``execution`` (a WorkflowExecution) once it has ended COMPLETED, FAILED or
# CANCELLED. The triggers app turns this into the execution.completed/failed events.
execution_finished = Signal()

# Sent with ``execution`` and ``step_execution`` once a step has parked WAITING (an
# approval, a delay) and that has committed. The triggers app emits ``execution.waiting``.
execution_waiting = Signal()
