#!/usr/bin/env python
"""Screenshots of the builder's pages, saved under docs/screenshots/.

    .venv/bin/python scripts/screenshots_builder.py [--out docs/screenshots]

Starts the web process and a Celery worker on a throw-away SQLite database and
filesystem broker (seeded with the demo user, prompt and workflow, a second workflow
whose first step uses the saved prompt, and a few past runs so the lists have numbers),
drives Debian's chromium (PROMPTPILOT_CHROMIUM, default /usr/bin/chromium) with
playwright and saves: workflows-list.png, workflow-detail.png, workflow-editor.png,
workflow-preview.png, workflow-preview-json-guard.png, execution-detail.png (a real
run by the worker, completed, with its timeline), executions-list.png, prompts-list.png
and prompt-detail.png. Nothing outside the temporary directory is touched.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "screenshots-demo-pw"
CHROMIUM = os.environ.get("PROMPTPILOT_CHROMIUM", "/usr/bin/chromium")

SETUP = """
from datetime import timedelta
from django.utils import timezone
from workflows.models import Workflow, WorkflowExecution
from workflows.services.workflows import workflow_update
flow = Workflow.objects.order_by("pk").first()
# A second version, so the detail page has a diff to show.
steps = [{**s, "prompt": None} for s in __import__("workflows.services.definitions", fromlist=["x"])
         .workflow_definition_snapshot(workflow=flow)["steps"]]
steps[0]["retry_config"] = {"max_retries": 2, "retry_on": ["transient"]}
workflow_update(workflow=flow, data={"steps": steps, "note": "retry the draft twice"})
now = timezone.now()
for hours, status in ((30, "COMPLETED"), (20, "COMPLETED"), (5, "FAILED"), (2, "COMPLETED"), (1, "COMPLETED")):
    run = WorkflowExecution.objects.create(workflow=flow, version=flow.versions.order_by("-number").first(),
                                           status=status, input={"topic": "durable execution"},
                                           error={"type": "ProviderTimeout", "message": "The model did not answer in 120 s."} if status == "FAILED" else None)
    WorkflowExecution.objects.filter(pk=run.pk).update(created_at=now - timedelta(hours=hours),
        started_at=now - timedelta(hours=hours), completed_at=now - timedelta(hours=hours, seconds=-3))
# A second workflow whose steps take a moment (echo's delay_ms), the first from the saved prompt.
from workflows.models import Prompt, WorkflowStep, WorkflowVariable
from workflows.services.definitions import workflow_version_create
prompt = Prompt.objects.order_by("pk").first()
reply = Workflow.objects.create(owner=flow.owner, name="Support reply",
                                description="Answers a support ticket from the saved prompt, then polishes it.")
WorkflowVariable.objects.create(workflow=reply, name="topic", type="STRING", required=True, sample="a failed export")
WorkflowVariable.objects.create(workflow=reply, name="audience", type="STRING", required=False, default="a customer")
echo = {"provider": "echo", "model": "echo"}
WorkflowStep.objects.create(workflow=reply, order=1, name="answer", type="PROMPT", prompt=prompt,
                            config={"model": {**echo, "delay_ms": 900}})
WorkflowStep.objects.create(workflow=reply, order=2, name="polish", type="PROMPT",
                            config={"template": "Polish: {{ steps.answer.output }}", "model": {**echo, "delay_ms": 400}})
WorkflowStep.objects.create(workflow=reply, order=3, name="sign", type="TRANSFORM",
                            config={"template": "{{ steps.polish.output }} -- The support team"})
workflow_version_create(workflow=reply, note="created by the screenshot script")
print(prompt.pk)
print(reply.pk)
print(flow.pk)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _manage(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True,
                          capture_output=True, text=True, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The embedded default (SQLite and the filesystem broker) inside the temporary directory.
        env = {**os.environ, "PROMPTPILOT_VAR_DIR": tmp, "DJANGO_DEBUG": "true",
               "PROMPTPILOT_DEMO_PASSWORD": PASSWORD}
        for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
            env.pop(name, None)
        _manage(env, "migrate", "--noinput")
        _manage(env, "seed_demo")
        prompt_id, run_workflow_id, workflow_id = _manage(env, "shell", "-c", SETUP).stdout.strip().splitlines()[-3:]
        port = _free_port()
        server = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runserver", "--noreload",
                                   f"127.0.0.1:{port}"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker_log = Path(tmp) / "worker.log"
        with worker_log.open("wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "promptpilot", "worker", "-l", "info",
                                       "--hostname", "screenshots@%h"], env=env, cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=1)
                    break
                except Exception:
                    time.sleep(0.2)
            _shoot(base, workflow_id, out)
            _shoot_runs_and_prompts(base, run_workflow_id, prompt_id, out)
        except Exception:
            print(f"worker log:\n{worker_log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            for process in (worker, server):
                process.terminate()
            for process in (worker, server):
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    print(f"screenshots saved under {out}")


def _logged_in_tab(browser, base: str):
    tab = browser.new_page(base_url=base, viewport={"width": 1280, "height": 860})
    tab.goto("/accounts/login/?next=/workflows/")
    tab.fill("#id_username", "demo")
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit], button[type=submit]")
    tab.wait_for_url("**/workflows/")
    return tab


def _shoot(base: str, workflow_id: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        tab = _logged_in_tab(browser, base)
        tab.screenshot(path=str(out / "workflows-list.png"), full_page=True)

        tab.goto(f"/workflows/{workflow_id}/")
        tab.locator("details.diff").first.evaluate("d => d.open = true")
        tab.screenshot(path=str(out / "workflow-detail.png"), full_page=True)

        tab.goto(f"/workflows/{workflow_id}/edit")
        # The save bar sticks to the viewport's bottom; a full-page capture would paint it mid-page.
        tab.add_style_tag(content=".save-bar { position: static; }")
        tab.screenshot(path=str(out / "workflow-editor.png"), full_page=True)

        tab.goto(f"/workflows/{workflow_id}/preview")
        tab.click("button:has-text('Run preview')")
        tab.locator("[data-testid=step-card]").first.wait_for()
        tab.locator("[data-testid=step-card] details").first.evaluate("d => d.open = true")
        tab.screenshot(path=str(out / "workflow-preview.png"), full_page=True)

        tab.check("input[name=mode][value=json]")
        tab.fill("#id_input_json", '{\n  "topic": "durable execution",\n  "audience": \n}')
        tab.locator("[data-json-status].bad").wait_for()
        tab.screenshot(path=str(out / "workflow-preview-json-guard.png"))
        browser.close()


def _shoot_runs_and_prompts(base: str, workflow_id: str, prompt_id: str, out: Path) -> None:
    """A real run started from its page and watched until the worker completes it, then
    the runs list and the prompt pages."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        tab = _logged_in_tab(browser, base)
        tab.goto(f"/workflows/{workflow_id}/run")
        tab.click("button:has-text('Start run')")
        tab.wait_for_url("**/executions/*/")
        badge = tab.locator("#execution-live .page-head h1 .badge")
        badge.filter(has_text="COMPLETED").wait_for(timeout=120_000)  # the page updates itself (htmx)
        tab.goto(tab.url)  # without the "Run started" message
        tab.locator("details.step-card").first.evaluate("d => d.open = true")
        tab.screenshot(path=str(out / "execution-detail.png"), full_page=True)

        tab.goto("/executions/")
        tab.screenshot(path=str(out / "executions-list.png"), full_page=True)

        tab.goto("/prompts/")
        tab.screenshot(path=str(out / "prompts-list.png"), full_page=True)
        tab.goto(f"/prompts/{prompt_id}/")
        tab.screenshot(path=str(out / "prompt-detail.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
