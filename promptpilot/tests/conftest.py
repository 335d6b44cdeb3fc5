"""The chaos suite restarts PostgreSQL and Redis: it is collected only when
scripts/run_chaos.py has started private instances for it (make test's third pass)."""
import os

from promptpilot.tests.chaos.services import ENV

collect_ignore = [] if os.environ.get(ENV) else ["chaos"]
