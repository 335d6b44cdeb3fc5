"""The engine stays framework-free: importable and runnable without Django, DRF or Celery."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import sys
import workflows.engine.runner, workflows.engine.steps, workflows.engine.retry, workflows.engine.inputs
leaked = sorted({m.split('.')[0] for m in sys.modules} & {'django', 'rest_framework', 'celery'})
print(','.join(leaked))
"""


def test_engine_imports_neither_django_drf_nor_celery() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
