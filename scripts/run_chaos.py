#!/usr/bin/env python
"""Run the chaos suite (promptpilot/tests/chaos/) on PostgreSQL and Redis of its own.

    python scripts/run_chaos.py [pytest arguments]

The chaos tests restart PostgreSQL and Redis, so they must never run on the shared ones:
this wrapper ``initdb``s a throwaway cluster in a temporary directory (as the ``postgres``
user when run as root) and starts a non-persistent ``redis-server``, both on free ports,
points DATABASE_URL and CELERY_BROKER_URL at them, tells the tests how to restart them
(PROMPTPILOT_CHAOS_SERVICES), runs ``pytest promptpilot/tests/chaos`` and removes both
afterwards, whatever the outcome. Exits with pytest's code. ``make test`` runs it as its
third pass; the main suite never collects the chaos directory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptpilot.tests.chaos.services import ENV, PrivatePostgres, PrivateRedis, PrivateServices  # noqa: E402


def main(pytest_args: list[str]) -> int:
    base = Path(tempfile.mkdtemp(prefix="promptpilot-chaos-"))
    os.chmod(base, 0o755)
    services = PrivateServices(postgres=PrivatePostgres.create(base), redis=PrivateRedis.create(base))
    try:
        services.postgres.start()
        services.redis.start()
        print(f"chaos: private PostgreSQL on {services.postgres.port}, Redis on {services.redis.port} ({base})",
              flush=True)
        env = {**os.environ, "DATABASE_URL": services.postgres.url, "CELERY_BROKER_URL": services.redis.url,
               ENV: services.to_env()}
        env.pop("REDIS_URL", None)  # the rate limiter shares the private broker, never a shared Redis
        named = any(Path(ROOT, arg.split("::")[0]).exists() for arg in pytest_args if not arg.startswith("-"))
        paths = [] if named else ["promptpilot/tests/chaos"]
        return subprocess.call([sys.executable, "-m", "pytest", *paths, *pytest_args],
                               cwd=ROOT, env=env)
    finally:
        for stop in (services.redis.stop, services.postgres.stop):
            try:
                stop()
            except Exception as exc:  # already down: nothing to stop
                print(f"chaos: {exc}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
