"""scripts/run_embedded.py's supervisor, with stand-in processes (fast; no Django)."""
from __future__ import annotations

import importlib.util
import io
import os
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "run_embedded.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("run_embedded", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_embedded"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("run_embedded", None)


def py(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", code]


SLEEPER = py("import time; print('up'); time.sleep(60)")


def group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def make(runner, commands, grace: float = 5.0):
    stream = io.StringIO()
    supervisor = runner.Supervisor(commands, output=runner.Output(stream), grace_seconds=grace)
    return supervisor, stream


def test_when_one_child_dies_the_others_are_stopped_and_its_exit_code_is_returned(runner):
    supervisor, stream = make(runner, [("web", SLEEPER), ("worker", py("import sys; print('bye'); sys.exit(3)"))])
    supervisor.start()
    started = time.monotonic()
    code = supervisor.wait()
    assert code == 3
    assert time.monotonic() - started < 5
    assert all(group_gone(c.pid) for c in supervisor.children)
    text = stream.getvalue()
    assert "worker| bye" in text
    assert "worker exited with code 3; stopping the others" in text


def test_a_child_that_exits_zero_still_fails_the_run(runner):
    supervisor, _ = make(runner, [("web", SLEEPER), ("beat", py("print('done')"))])
    supervisor.start()
    assert supervisor.wait() == 1


def test_a_stop_request_stops_every_child_and_returns_zero(runner):
    supervisor, stream = make(runner, [("web", SLEEPER), ("worker", SLEEPER), ("beat", SLEEPER)])
    supervisor.start()
    supervisor.stop.reason = "SIGINT"
    threading.Timer(0.5, supervisor.stop.event.set).start()
    started = time.monotonic()
    assert supervisor.wait() == 0
    assert time.monotonic() - started < 3
    assert all(group_gone(c.pid) for c in supervisor.children)
    assert "SIGINT received" in stream.getvalue()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(runner):
    stubborn = py(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    supervisor, stream = make(runner, [("worker", stubborn)], grace=1.0)
    supervisor.start()
    while "worker| up" not in stream.getvalue():
        time.sleep(0.05)
    supervisor.stop.event.set()
    started = time.monotonic()
    assert supervisor.wait() == 0
    assert 0.9 < time.monotonic() - started < 4
    assert "still running after 1 s; killing it" in stream.getvalue()
    assert group_gone(supervisor.children[0].pid)


def test_grandchildren_die_with_their_child(runner):
    # Like Celery's pool: the child starts processes of its own, which ignore SIGTERM.
    parent = py(
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "print('grandchild', p.pid, flush=True); time.sleep(60)"
    )
    supervisor, stream = make(runner, [("worker", parent)], grace=1.0)
    supervisor.start()
    while "worker| grandchild " not in stream.getvalue():
        time.sleep(0.05)
    grandchild = int(stream.getvalue().split("worker| grandchild ")[1].split()[0])
    supervisor.stop.event.set()
    supervisor.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {grandchild} survived the stop")


def test_port_check_sees_a_busy_port(runner):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not runner.port_is_free("127.0.0.1", port)
    assert runner.port_is_free("127.0.0.1", port)


def test_the_three_processes_are_web_worker_and_beat(runner):
    commands = dict(runner.build_commands("127.0.0.1", 8123))
    assert set(commands) == {"web", "worker", "beat"}
    assert "127.0.0.1:8123" in commands["web"]
    assert commands["worker"][1:6] == ["-m", "celery", "-A", "promptpilot", "worker"]
    assert commands["beat"][1:6] == ["-m", "celery", "-A", "promptpilot", "beat"]
