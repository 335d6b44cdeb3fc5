"""docker-compose.yml is valid and describes the production shape (PostgreSQL + Redis).

Needs Debian's ``docker-compose`` package (no daemon: ``config`` only parses). A missing
binary FAILS this test; it never skips.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: apt-get install -y docker-compose", pytrace=False)
    return subprocess.run(
        [binary, "-f", "docker-compose.yml", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=env,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    quiet = compose("config", "-q")
    assert quiet.returncode == 0, quiet.stderr
    full = compose("config")
    assert full.returncode == 0, full.stderr
    return yaml.safe_load(full.stdout)


def command(service: dict) -> str:
    value = service.get("command", "")
    return " ".join(value) if isinstance(value, list) else value


def test_compose_has_the_five_services(config):
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(config["services"])


def test_images_and_commands(config):
    services = config["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert "gunicorn promptpilot.wsgi" in command(services["web"])
    assert command(services["worker"]).startswith("celery -A promptpilot worker")
    assert command(services["beat"]).startswith("celery -A promptpilot beat")
    assert "migrate" in command(services["migrate"])


def test_app_services_are_configured_by_environment(config):
    for name in ("web", "worker", "beat", "migrate"):
        env = config["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["DJANGO_SECRET_KEY"] and env["DJANGO_ALLOWED_HOSTS"]


def test_worker_scales_and_everything_waits_for_migrations_and_healthy_services(config):
    services = config["services"]
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "web", "worker", "beat"):
        assert services[name]["healthcheck"]["test"], name


def test_beat_is_healthy_only_while_it_sends(config):
    """Beat answers no ping: its check reads the heartbeat its scheduler writes per send
    (triggers/tests/schedules/test_beat_heartbeat.py runs the command against a real beat)."""
    beat = config["services"]["beat"]
    assert beat["healthcheck"]["test"] == ["CMD", "python", "manage.py", "beat_heartbeat", "--max-age", "60"]
    assert "PROMPTPILOT_BEAT_HEARTBEAT_FILE" not in beat["environment"], "the default, inside the container"
    assert "CELERY_BEAT_SCHEDULER" not in beat["environment"], "the scheduler that writes the heartbeat"
    assert "-S" not in command(beat).split() and "--scheduler" not in command(beat)


def test_web_is_healthy_only_when_ready(config):
    check = " ".join(config["services"]["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in check


def test_flower_is_optional_on_the_same_broker_and_local_only():
    with_flower = compose("--profile", "flower", "config")
    assert with_flower.returncode == 0, with_flower.stderr
    services = yaml.safe_load(with_flower.stdout)["services"]
    flower = services["flower"]
    assert flower["profiles"] == ["flower"]  # `docker-compose up` alone does not start it
    assert "--broker=redis://redis:6379/0" in command(flower)
    assert services["web"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"  # the same broker
    published = flower["ports"][0]
    assert (published.get("host_ip") if isinstance(published, dict) else published.split(":")[0]) == "127.0.0.1"


def test_dockerfile_builds_from_python_311_slim_with_the_requirements():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nFROM python:3.11-slim\n" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)


def test_workers_run_the_shipped_runtime_one_per_core_within_postgres_connection_budget(config):
    from django.conf import settings

    services = config["services"]
    worker = command(services["worker"])
    assert not {"--pool", "-P", "--concurrency", "-c"} & set(worker.split()), "the shipped defaults, not flags"
    # One worker, forking a process per core (PROMPTPILOT_WORKER_PROCESSES=auto): no copy per core.
    assert services["worker"].get("scale", 1) == 1
    assert services["worker"].get("environment", {}).get("PROMPTPILOT_WORKER_PROCESSES", "auto") == "auto"
    web = command(services["web"]).split()
    web_connections = int(web[web.index("--workers") + 1]) * int(web[web.index("--threads") + 1])
    beat_connections = 2
    cores = 2  # the machine the compose file is sized for
    worker_connections = cores * settings.PROMPTPILOT["DB_POOL"]["max_size"] + 1  # + its main process
    assert web_connections + worker_connections + beat_connections <= 40  # PostgreSQL's default max is 100


def test_web_and_workers_share_the_metrics_folder(config):
    """/metrics (web) adds up the files every web and worker process writes (multiprocess mode)."""
    services = config["services"]
    folder = services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    for name in ("web", "worker"):
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == folder
        mounts = services[name]["volumes"]
        assert any((m.get("source"), m.get("target")) == ("metrics", folder) if isinstance(m, dict)
                   else m.split(":")[:2] == ["metrics", folder] for m in mounts), mounts


def test_one_log_level_reaches_web_worker_and_beat():
    """PROMPTPILOT_LOG_LEVEL from the shell or .env sets every app service's level: no
    command pins its own with -l (Celery's -l would win over the variable)."""
    configured = compose("config", env={**os.environ, "PROMPTPILOT_LOG_LEVEL": "WARNING"})
    assert configured.returncode == 0, configured.stderr
    services = yaml.safe_load(configured.stdout)["services"]
    for name in ("web", "worker", "beat"):
        assert services[name]["environment"]["PROMPTPILOT_LOG_LEVEL"] == "WARNING", name
        words = command(services[name]).split()
        assert not {"-l", "--loglevel", "--log-level"} & set(words), (name, words)
