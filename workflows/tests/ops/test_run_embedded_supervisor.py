"""scripts/run_embedded.py's supervisor, with stand-in processes (fast; no Django)."""
from __future__ import annotations

import importlib.util
import io
import os
import re
import signal
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


def make(runner, commands, grace: float = 5.0, **restart):
    stream = io.StringIO()
    supervisor = runner.Supervisor(commands, output=runner.Output(stream), grace_seconds=grace, **restart)
    return supervisor, stream


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout:g} s")


def run_in_background(supervisor) -> threading.Thread:
    thread = threading.Thread(target=lambda: setattr(supervisor, "exit_code", supervisor.wait()), daemon=True)
    thread.start()
    return thread


def stop(supervisor, thread: threading.Thread) -> int:
    supervisor.stop.reason = "SIGINT"
    supervisor.stop.event.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the supervisor did not stop"
    return supervisor.exit_code


def delays(text: str, name: str) -> list[float]:
    return [float(d) for d in re.findall(rf"^run   \| {name} \(pid \d+\) exited with code 3 after [\d.]+ s; "
                                         rf"restarting it in ([\d.]+) s \(at \d\d:\d\d:\d\d\)$", text, re.M)]


def test_a_child_that_dies_is_restarted_with_a_doubling_delay_and_the_others_keep_running(runner):
    crasher = py("import sys; print('up'); sys.exit(3)")
    supervisor, stream = make(runner, [("web", SLEEPER), ("worker", crasher)],
                              restart_first_delay=0.2, restart_max_delay=0.8, restart_stable_seconds=60)
    supervisor.start()
    web_pid = supervisor.children[0].pid
    thread = run_in_background(supervisor)
    wait_for(lambda: len(delays(stream.getvalue(), "worker")) >= 5, "five restarts of the worker")
    assert supervisor.children[0].alive() and supervisor.children[0].pid == web_pid
    assert stop(supervisor, thread) == 0
    text = stream.getvalue()
    assert delays(text, "worker")[:5] == [0.2, 0.4, 0.8, 0.8, 0.8]  # doubling, capped
    assert "restarted worker (pid " in text and "restart 4)" in text
    assert text.count("worker| up") >= 5
    assert all(group_gone(c.pid) for c in supervisor.children)


def test_the_delay_starts_again_from_the_first_once_a_child_ran_long_enough(runner):
    slow_crasher = py("import sys, time; time.sleep(0.6); sys.exit(3)")
    supervisor, stream = make(runner, [("beat", slow_crasher)],
                              restart_first_delay=0.2, restart_max_delay=5, restart_stable_seconds=0.5)
    supervisor.start()
    thread = run_in_background(supervisor)
    wait_for(lambda: len(delays(stream.getvalue(), "beat")) >= 3, "three restarts of beat")
    stop(supervisor, thread)
    assert delays(stream.getvalue(), "beat")[:3] == [0.2, 0.2, 0.2]


def test_a_child_killed_from_outside_comes_back_with_a_new_pid(runner):
    supervisor, stream = make(runner, [("worker", SLEEPER), ("beat", SLEEPER)], restart_first_delay=0.2)
    supervisor.start()
    thread = run_in_background(supervisor)
    wait_for(lambda: stream.getvalue().count("| up") == 2, "both children up")
    old_pid = supervisor.children[0].pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: "restarted worker (pid " in stream.getvalue(), "the worker's restart")
    wait_for(lambda: stream.getvalue().count("worker| up") == 2, "the new worker up")
    assert supervisor.children[0].pid != old_pid and supervisor.children[0].alive()
    assert f"worker (pid {old_pid}) exited with code -9" in stream.getvalue()
    assert stop(supervisor, thread) == 0
    assert all(group_gone(c.pid) for c in supervisor.children)


def test_a_stop_request_during_a_restart_pause_stops_everything(runner):
    supervisor, stream = make(runner, [("web", SLEEPER), ("worker", py("import sys; sys.exit(3)"))],
                              restart_first_delay=30)
    supervisor.start()
    thread = run_in_background(supervisor)
    wait_for(lambda: "restarting it in 30 s" in stream.getvalue(), "the restart pause")
    started = time.monotonic()
    assert stop(supervisor, thread) == 0
    assert time.monotonic() - started < 10
    assert "restarted worker" not in stream.getvalue()
    assert all(group_gone(c.pid) for c in supervisor.children)


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
