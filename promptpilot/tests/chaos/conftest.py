"""Fixtures of the chaos suite: handles on the private PostgreSQL and Redis that
scripts/run_chaos.py started for this pytest run, to restart them mid-test."""
from __future__ import annotations

import pytest
from django.db import connection

from .services import PrivateServices


@pytest.fixture(scope="session", autouse=True)
def private_services() -> PrivateServices:
    """Every chaos test, even one that restarts nothing, runs on the private instances: a
    run of this directory outside the wrapper fails here, before touching shared ones."""
    services = PrivateServices.from_env()
    if services is None:
        pytest.fail("The chaos suite restarts PostgreSQL and Redis: run it with scripts/run_chaos.py "
                    "(make test), which starts private instances.", pytrace=False)
    return services


@pytest.fixture
def restart_postgres(private_services):
    """Restart the private cluster; this test process's connection is dropped with the
    others, so it is closed here and the next query opens a new one."""
    def restart() -> None:
        private_services.postgres.restart()
        connection.close()

    return restart


@pytest.fixture
def restart_redis(private_services):
    return private_services.redis.restart
