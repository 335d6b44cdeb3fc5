# PromptPilot developer commands. `make run` and `make test` are the Quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The suite runs on PostgreSQL + Redis (CI starts both; see .ci/run).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: venv test lint run

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

# The durability and orchestration tests, and the core runs on a real worker, run a second
# time with the PostgreSQL fast statements off (PROMPTPILOT_FAST_STATEMENTS=false): the
# general code of every transition, on PostgreSQL too. Only for the whole suite (no
# PYTEST_ARGS). (Logging, metrics and HTTP-on-worker tests do not depend on the statements.)
# Tests marked single_pass never reach transitions.fast_statements(), the one reader of
# that setting, so they would run the same code twice: the second pass leaves them out
# (conftest.py fails a marked test that does reach it).
GENERAL_CODE_TESTS := workflows/tests/durability workflows/tests/services workflows/tests/integration/test_runs_on_worker.py
# PYTHONDONTWRITEBYTECODE= : Python caches bytecode for the suite's runs even where the
# environment turns it off (the Dockerfile does): the suite starts many Python
# processes (workers, beat, manage.py, the embedded runner, gunicorn), and each would
# compile the project again, as pytest would rewrite every test module again.
TEST_ENV = DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) PYTHONDONTWRITEBYTECODE=

# The chaos suite (promptpilot/tests/chaos/) restarts PostgreSQL and Redis, so it never runs
# on the shared ones: scripts/run_chaos.py starts a throwaway cluster and redis-server on
# free ports for it, runs it, and removes them (about 4 minutes). Only for the whole suite;
# alone: $(BIN)/python scripts/run_chaos.py [pytest arguments].
test: venv
	$(TEST_ENV) $(BIN)/pytest --durations=25 $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,$(TEST_ENV) PROMPTPILOT_FAST_STATEMENTS=false $(BIN)/pytest -m "not single_pass" $(GENERAL_CODE_TESTS))
	$(if $(PYTEST_ARGS),,PYTHONDONTWRITEBYTECODE= $(BIN)/python scripts/run_chaos.py --durations=10)

lint: venv
	$(BIN)/ruff check .

# The embedded default: web (gunicorn), a Celery worker and beat in the foreground, on
# SQLite and the embedded file-based broker under var/ (PROMPTPILOT_VAR_DIR). Needs no
# environment; migrates, collects static files and seeds the demo first. Only `test`
# sets DATABASE_URL, on its own command line, so nothing leaks into `run` (a URL that
# your shell exports is honoured: the first line printed names the database in use).
# Options: make run RUN_ARGS="--port 8001"
run: venv
	$(BIN)/python scripts/run_embedded.py $(RUN_ARGS)
