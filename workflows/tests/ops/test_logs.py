"""Log lines: JSON by default, console lines for people, ids from the log context, and a
request id on every request's lines and response.

The format tests start a fresh Python process with Django's settings, as web, worker and
beat start, so what they print is what an operator sees.
"""
from __future__ import annotations

import json
import logging
import logging.config
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from promptpilot.common.logs import CELERY_TASK_LOGGERS, log_context, logging_config, set_process_level
from workflows.tests.factories import make_workflow

ROOT = Path(__file__).resolve().parents[3]

LOG_ONE_EVENT = """
import logging, django
django.setup()
from promptpilot.common.logs import CELERY_TASK_LOGGERS, log_context, logging_config, set_process_level
with log_context(execution_id="e-1", step="draft", attempt=2):
    logging.getLogger("workflows.services.orchestration").info("step.started", extra={"step_type": "PROMPT"})
"""


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PROMPTPILOT_LOG_FORMAT", "DJANGO_DEBUG")}
    environment.update({"DJANGO_SETTINGS_MODULE": "promptpilot.settings.test", **env})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=60)


def test_the_default_is_one_json_object_a_line_with_the_context_ids():
    done = run_python(LOG_ONE_EVENT)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.strip().splitlines()
    record = json.loads(line)
    assert record["message"] == "step.started" and record["level"] == "INFO"
    assert record["logger"] == "workflows.services.orchestration"
    assert (record["execution_id"], record["step"], record["attempt"], record["step_type"]) == ("e-1", "draft", 2,
                                                                                              "PROMPT")
    assert record["time"].endswith("+00:00")


@pytest.mark.parametrize("env", [{"DJANGO_DEBUG": "1"}, {"PROMPTPILOT_LOG_FORMAT": "console"}])
def test_debug_or_the_console_format_prints_lines_for_people(env):
    done = run_python(LOG_ONE_EVENT, **env)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert not line.startswith("{")
    assert " INFO workflows.services.orchestration step.started " in line
    assert "execution_id=e-1" in line and "step=draft" in line and "attempt=2" in line


def test_an_explicit_json_format_wins_over_debug():
    done = run_python(LOG_ONE_EVENT, DJANGO_DEBUG="1", PROMPTPILOT_LOG_FORMAT="json")
    assert json.loads(done.stderr.strip())["execution_id"] == "e-1"


def test_an_unknown_format_stops_the_process_naming_the_variable():
    done = run_python(LOG_ONE_EVENT, PROMPTPILOT_LOG_FORMAT="xml")
    assert done.returncode != 0
    assert "PROMPTPILOT_LOG_FORMAT is 'xml'; set it to json or console." in done.stderr


def test_context_ids_last_for_their_block_and_an_extra_wins(caplog):
    logger = logging.getLogger("workflows.test")
    with caplog.at_level(logging.INFO):
        with log_context(execution_id="outer"):
            with log_context(step="inner", attempt=1):
                logger.info("nested")
            logger.info("outer-only")
            logger.info("explicit", extra={"execution_id": "given"})
        logger.info("outside")
    ids = {r.getMessage(): (getattr(r, "execution_id", None), getattr(r, "step", None)) for r in caplog.records}
    assert ids == {"nested": ("outer", "inner"), "outer-only": ("outer", None), "explicit": ("given", None),
                   "outside": (None, None)}


@pytest.mark.django_db
def test_every_response_echoes_a_request_id_and_the_requests_log_lines_carry_it(api, user, caplog):
    workflow = make_workflow(user, steps=[{"name": "t", "type": "TRANSFORM", "config": {"template": "x"}}])
    with caplog.at_level(logging.INFO):
        given = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {}}, format="json",
                         HTTP_X_REQUEST_ID="lb-7f3a.1")
    assert given.status_code == 202 and given["X-Request-ID"] == "lb-7f3a.1"
    [created] = [r for r in caplog.records if r.getMessage() == "execution.created"]
    assert created.request_id == "lb-7f3a.1" and created.execution_id == given.json()["id"]

    made = api.get("/healthz", HTTP_X_REQUEST_ID="no spaces or\nnewlines allowed")
    assert len(made["X-Request-ID"]) == 32 and made["X-Request-ID"].isalnum(), "an unsafe id is replaced"
    assert api.get("/healthz")["X-Request-ID"] != made["X-Request-ID"]


CELERY_TASK_LEVELS = """
import logging, django
django.setup()
from promptpilot.common.logs import CELERY_TASK_LOGGERS
for name in CELERY_TASK_LOGGERS:
    print(name, logging.getLevelName(logging.getLogger(name).getEffectiveLevel()))
"""


@pytest.mark.parametrize(("level", "expected"), [("INFO", "WARNING"), ("WARNING", "WARNING"), ("ERROR", "ERROR"),
                                               ("DEBUG", "DEBUG")])
def test_celerys_own_line_per_task_is_off_unless_the_process_logs_at_debug(level, expected):
    """``Task … received`` and ``Task … succeeded in …`` say what step.started and
    step.completed say, without the run's ids; PROMPTPILOT_LOG_LEVEL=DEBUG brings them back."""
    done = run_python(CELERY_TASK_LEVELS, PROMPTPILOT_LOG_LEVEL=level)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["celery.app.trace", expected, "celery.worker.strategy", expected]


@pytest.mark.parametrize(("given", "expected"), [("info", logging.WARNING), ("debug", logging.DEBUG),
                                                 (logging.DEBUG, logging.DEBUG), (logging.ERROR, logging.ERROR)])
def test_a_workers_l_sets_celerys_task_lines_by_the_same_rule(given, expected):
    root = logging.getLogger()
    saved = [root.level, *(logging.getLogger(name).level for name in CELERY_TASK_LOGGERS)]
    try:
        set_process_level(given)
        assert root.level == logging._checkLevel(given.upper() if isinstance(given, str) else given)
        assert [logging.getLogger(name).level for name in CELERY_TASK_LOGGERS] == [expected, expected]
    finally:
        root.setLevel(saved[0])
        for name, level in zip(CELERY_TASK_LOGGERS, saved[1:], strict=True):
            logging.getLogger(name).setLevel(level)


def _json_line(record: logging.LogRecord) -> dict:
    config = logging_config(log_format="json", level="INFO")
    formatter = logging.config.DictConfigurator(config).configure_formatter(config["formatters"]["json"])
    return json.loads(formatter.format(record))


def test_the_time_is_the_records_moment_in_utc_with_microseconds():
    record = logging.makeLogRecord({"name": "x", "levelno": logging.INFO, "levelname": "INFO", "msg": "m"})
    record.created = 1764862299.123456
    line = _json_line(record)
    assert line["time"] == "2025-12-04T15:31:39.123456+00:00"
    assert list(line)[-1] == "time"
    parsed = datetime.fromisoformat(line["time"])
    assert abs(parsed.timestamp() - record.created) < 2e-6 and parsed.utcoffset() == timedelta(0)


def test_values_that_are_not_plain_json_are_still_written():
    """Plain values take the fast encoder; anything else python-json-logger's own."""
    when = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
    record = logging.makeLogRecord({"name": "x", "levelno": logging.INFO, "levelname": "INFO", "msg": "m",
                                    "invocation_id": uuid.UUID("84895165-c84e-4df0-a2e6-f53227b60567"),
                                    "when": when, "error": ValueError("bad input"), "shape": object()})
    line = _json_line(record)
    assert line["invocation_id"] == "84895165-c84e-4df0-a2e6-f53227b60567"
    assert line["when"] == "2026-12-04T10:30:00+00:00"
    assert line["error"] == "ValueError: bad input"
    assert line["shape"].startswith("<object object at ")
