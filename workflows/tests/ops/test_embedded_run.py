"""`make run`'s runner end to end: SQLite + filesystem broker in a temporary var dir.

Starts scripts/run_embedded.py as a real process with no DATABASE_URL / broker in its
environment, logs in to the admin over HTTP, then stops it with a signal and checks that
web, worker and beat (with their own children) are gone.
"""
from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RUNNER = ROOT / "scripts" / "run_embedded.py"
PASSWORD = "embedded-demo-pass-1"
STARTUP_TIMEOUT = 180  # a fresh SQLite database is migrated first
STOP_TIMEOUT = 20

pytestmark = pytest.mark.embedded

# What `make test` or a developer's shell may export that must not reach the embedded run.
FOREIGN_ENV = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "TEST_REDIS_URL", "DJANGO_SETTINGS_MODULE",
               "DJANGO_SECRET_KEY", "CELERY_TASK_ALWAYS_EAGER", "DJANGO_DEBUG")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Run:
    """One scripts/run_embedded.py process, its output collected in the background."""

    def __init__(self, var_dir: Path, port: int, password: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV and not k.startswith("PROMPTPILOT_")}
        env.update({"PROMPTPILOT_VAR_DIR": str(var_dir), "PROMPTPILOT_PORT": str(port)})
        if password:
            env["PROMPTPILOT_DEMO_PASSWORD"] = password
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def child_pids(self) -> dict[str, int]:
        """The pid of each child's latest start (restarts included)."""
        found = re.findall(r"(?:re)?started (web|worker|beat) \(pid (\d+)", self.output())
        return {name: int(pid) for name, pid in found}

    def wait_for(self, predicate, what: str, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"the runner exited ({self.proc.returncode}) before {what}:\n{self.output()[-6000:]}")
            time.sleep(0.25)
        pytest.fail(f"no {what} within {timeout} s:\n{self.output()[-6000:]}")

    def answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.base + path, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_until_ready(self) -> None:
        self.wait_for(lambda: self.answers("/admin/login/"), "answer on /admin/login/")
        self.wait_for(lambda: set(self.child_pids()) == {"web", "worker", "beat"}, "three children")
        self.wait_for(lambda: re.search(r"^worker\| .* ready\.", self.output(), re.M), "worker ready", 90)
        self.wait_for(lambda: "beat: Starting" in self.output(), "beat start", 90)

    def stop(self, sig: int) -> int:
        pids = self.child_pids()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runner did not stop within {STOP_TIMEOUT} s:\n{self.output()[-6000:]}")
        # Every child was a session leader: no process may be left in its group. A killed
        # grandchild (a gunicorn worker) lingers until PID 1 reaps it: wait for that, boundedly.
        deadline = time.monotonic() + 15
        while True:
            survivors = [name for name, pid in pids.items() if group_exists(pid)]
            if not survivors or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not survivors, f"still running after stop: {survivors}\n{self.output()[-4000:]}"
        return code

    def kill_everything(self) -> None:
        for pid in self.child_pids().values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def admin_login(base: str, username: str, password: str) -> str:
    """Log in through the admin's own form, as a browser would; return the page reached."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{base}/admin/login/?next=/admin/", timeout=10) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(f"{base}/admin/login/?next=/admin/", data=body, headers={"Referer": base})
    with opener.open(request, timeout=10) as response:
        assert response.status == 200
        landing = response.read().decode()
    with opener.open(f"{base}/admin/workflows/workflow/", timeout=10) as response:
        return landing + response.read().decode()


def api_call(base: str, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read().decode())


def execute_demo_through_api(base: str, password: str) -> dict:
    """The README's curl sequence: token, execute the demo workflow, poll until it ends."""
    token = api_call(base, "POST", "/api/auth/token/", {"username": "demo", "password": password})["token"]
    workflows = api_call(base, "GET", "/api/workflows/", token=token)["results"]
    demo = next(w for w in workflows if w["name"] == "Demo: summarise and classify")
    started = api_call(base, "POST", f"/api/workflows/{demo['id']}/execute",
                       {"input": {"topic": "durable execution"}}, token=token)
    assert started["status"] == "PENDING"
    return wait_until_finished(base, token, started["id"], "the demo run")


def wait_until_finished(base: str, token: str, execution_id: str, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = api_call(base, "GET", f"/api/executions/{execution_id}/", token=token)
        if execution["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return execution
        time.sleep(0.5)
    raise AssertionError(f"{what} did not finish within {timeout:g} s: {execution}")


def execute_burst_through_api(base: str, password: str, runs: int) -> list[dict]:
    """Many demo runs at once: the default worker takes them all together, on SQLite."""
    token = api_call(base, "POST", "/api/auth/token/", {"username": "demo", "password": password})["token"]
    demo = next(w for w in api_call(base, "GET", "/api/workflows/", token=token)["results"]
                if w["name"] == "Demo: summarise and classify")
    started = [api_call(base, "POST", f"/api/workflows/{demo['id']}/execute", {"input": {"topic": f"burst {i}"}},
                        token=token)["id"] for i in range(runs)]
    return [wait_until_finished(base, token, execution_id, "a burst run", timeout=120) for execution_id in started]


def deliver_signed_webhook(base: str, password: str) -> dict:
    """Create a WEBHOOK trigger on the demo workflow, deliver one signed event, poll its run."""
    from triggers.services.webhooks import webhook_signature  # pure function: no database

    token = api_call(base, "POST", "/api/auth/token/", {"username": "demo", "password": password})["token"]
    demo = next(w for w in api_call(base, "GET", "/api/workflows/", token=token)["results"]
                if w["name"] == "Demo: summarise and classify")
    trigger = api_call(base, "POST", "/api/triggers/", {"workflow": demo["id"], "type": "WEBHOOK", "name": "hook"},
                       token=token)
    body = json.dumps({"topic": "webhooks on SQLite"}).encode()
    msg_id, timestamp = "msg_embedded_1", str(int(time.time()))
    headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": timestamp,
               "webhook-signature": webhook_signature(secret=trigger["secret"], msg_id=msg_id, timestamp=timestamp,
                                                      body=body)}
    answers = []
    for _ in range(2):  # the second delivery of the same id answers the first run
        request = urllib.request.Request(f"{base}/api/webhooks/{trigger['id']}", data=body, headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append((response.status, json.loads(response.read().decode())))
    assert [status for status, _ in answers] == [202, 200], answers
    assert answers[1][1]["execution_id"] == answers[0][1]["execution_id"]
    return wait_until_finished(base, token, answers[0][1]["execution_id"], "the webhook's run")


def test_embedded_run_serves_the_admin_and_stops_cleanly_then_restarts_on_the_same_data(tmp_path):
    var_dir = tmp_path / "var"
    port = free_port()

    run = Run(var_dir, port, PASSWORD)
    try:
        run.wait_until_ready()
        assert (var_dir / "db.sqlite3").exists() and (var_dir / "broker").is_dir()
        assert "SQLite in" in run.output() and "filesystem broker" in run.output()
        assert run.answers("/static/admin/css/base.css"), "admin CSS is not served"
        # Ready: SQLite, the embedded broker and the worker (a ping through the broker's folders).
        run.wait_for(lambda: run.answers("/readyz"), "/readyz answering 200", 90)
        run.wait_for(lambda: "PromptPilot is up" in run.output(), "the launcher's ready banner", 30)

        pages = admin_login(run.base, "demo", PASSWORD)
        assert "Site administration" in pages and "Log out" in pages
        assert "Demo: summarise and classify" in pages

        execution = execute_demo_through_api(run.base, PASSWORD)
        assert execution["status"] == "COMPLETED", execution["error"]
        assert "durable execution" in json.dumps(execution["output"])
        assert [s["status"] for s in execution["steps"]] == ["COMPLETED"] * len(execution["steps"])
        # `make run` prints console lines for people (not JSON), with the run's ids.
        assert re.search(rf"^worker\| \S+ \S+ INFO \S+ execution\.completed .*execution_id={execution['id']}",
                         run.output(), re.M), run.output()[-3000:]

        burst = execute_burst_through_api(run.base, PASSWORD, runs=40)
        assert [e["status"] for e in burst] == ["COMPLETED"] * 40, [e["error"] for e in burst if e["error"]]
        assert "(thread)" in run.output(), "the worker runs the shipped thread pool"
        assert "database is locked" not in run.output()

        hooked = deliver_signed_webhook(run.base, PASSWORD)
        assert hooked["status"] == "COMPLETED", hooked["error"]
        assert hooked["trigger_type"] == "WEBHOOK"
        assert "webhooks on SQLite" in json.dumps(hooked["output"])

        assert run.stop(signal.SIGINT) == 0
        assert "SIGINT received" in run.output()
    finally:
        run.kill_everything()

    # Again, on the same var dir, without the password variable: everything is reused.
    port = free_port()
    again = Run(var_dir, port, password=None)
    try:
        again.wait_until_ready()
        assert "existing password unchanged" in again.output()
        assert "already there" in again.output()
        assert "Demo: summarise and classify" in admin_login(again.base, "demo", PASSWORD)

        # A worker that dies is started again; web and beat keep running meanwhile.
        before = again.child_pids()
        os.killpg(before["worker"], signal.SIGKILL)
        again.wait_for(lambda: re.search(rf"worker \(pid {before['worker']}\) exited with code -9 .*restarting it in",
                                         again.output()), "the launcher noticing the dead worker", 30)
        again.wait_for(lambda: "restarted worker (pid" in again.output(), "the worker's restart", 30)
        again.wait_for(lambda: len(re.findall(r"^worker\| .* ready\.", again.output(), re.M)) == 2,
                       "the new worker ready", 90)
        assert again.proc.poll() is None
        new_worker = again.child_pids()["worker"]
        assert {k: again.child_pids()[k] for k in ("web", "beat")} == {k: before[k] for k in ("web", "beat")}

        # What took the worker down in issue 11: a message file it finds empty. Named to
        # sort first in the task queue, so the worker meets it before the demo's messages.
        empty = var_dir / "broker" / "out" / f"{1:020d}_issue-11.celery.msg"
        empty.write_bytes(b"")
        execution = execute_demo_through_api(again.base, PASSWORD)
        assert execution["status"] == "COMPLETED", execution["error"]
        again.wait_for(lambda: (var_dir / "broker" / "quarantine" / empty.name).exists(), "the empty file quarantined", 30)
        assert "embedded_broker.message_quarantined" in again.output()
        # The decode error is named only by the quarantine line, never by a crash.
        assert "Unrecoverable error" not in again.output()
        assert all("embedded_broker.message_quarantined" in line
                   for line in again.output().splitlines() if "JSONDecodeError" in line)
        assert again.child_pids()["worker"] == new_worker

        assert again.stop(signal.SIGTERM) == 0
    finally:
        again.kill_everything()
