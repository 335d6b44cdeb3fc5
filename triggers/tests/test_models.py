"""The trigger models keep their vocabulary in sync with the workflows app."""
from __future__ import annotations

from triggers.models import TriggerKind
from workflows.models import ExecutionStatus, TriggerType


def test_trigger_kinds_match_execution_trigger_types():
    # RETRY and WORKFLOW runs are started by the platform (a retry, a WORKFLOW step), not by a trigger.
    assert set(TriggerKind.values) == set(TriggerType.values) - {TriggerType.RETRY, TriggerType.WORKFLOW}


def test_metrics_by_status_lists_every_execution_status():
    from triggers.serializers import ByStatusSerializer

    assert set(ByStatusSerializer().fields) == set(ExecutionStatus.values)
