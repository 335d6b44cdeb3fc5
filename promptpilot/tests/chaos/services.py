"""Private PostgreSQL and Redis instances for the chaos suite, which restarts them.

The shared services of a development machine or CI must never be restarted by a test
(other suites run on them), so ``scripts/run_chaos.py`` starts a throwaway cluster
(``initdb`` in a temporary directory) and a ``redis-server`` on free ports, runs the chaos
tests against them and removes them afterwards. The tests restart them through the same
classes, rebuilt from the JSON the wrapper puts in ``PROMPTPILOT_CHAOS_SERVICES``.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = "PROMPTPILOT_CHAOS_SERVICES"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<v>/bin),
    else the directory of ``initdb`` on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("No PostgreSQL server binaries (initdb) found: install postgresql")


@dataclass
class PrivatePostgres:
    """A cluster in ``data_dir`` on ``port``, owned by ``run_as`` when the suite runs as
    root (initdb refuses root)."""

    bin_dir: str
    data_dir: str
    port: int
    run_as: str = ""

    @classmethod
    def create(cls, base: Path) -> PrivatePostgres:
        run_as = "postgres" if os.geteuid() == 0 else ""
        if run_as:
            try:
                pwd.getpwnam(run_as)
            except KeyError:
                raise RuntimeError("initdb refuses root, and there is no 'postgres' user to run it as: "
                                   "install Debian's postgresql (it creates one) or run as another user") from None
        data = base / "pgdata"
        data.mkdir()
        if run_as:
            shutil.chown(base, run_as)
            shutil.chown(data, run_as)
        server = cls(bin_dir=str(postgres_bin_dir()), data_dir=str(data), port=free_port(), run_as=run_as)
        server._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        # A throwaway cluster: no fsync (a restart here is a clean stop, never a power cut);
        # room for several workers' pools at once.
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {server.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                       "fsync = off\nfull_page_writes = off\nmax_connections = 200\n")
        return server

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(Path(self.bin_dir) / tool), *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/chaos"

    @property
    def _log(self) -> str:
        # The server's output goes to a file: on pg_ctl's pipes it would keep them open.
        return str(Path(self.data_dir).parent / "postgres.log")

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data_dir, "-l", self._log, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """A fast restart: every connection is cut (as in a failover or an upgrade)."""
        self._run("pg_ctl", "-D", self.data_dir, "-l", self._log, "-m", "fast", "-w", "-t", "60", "restart")


@dataclass
class PrivateRedis:
    """A non-persistent redis-server on ``port``: a restart loses every message it held."""

    work_dir: str
    port: int

    @classmethod
    def create(cls, base: Path) -> PrivateRedis:
        work = base / "redis"
        work.mkdir()
        return cls(work_dir=str(work), port=free_port())

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--dir", self.work_dir, "--logfile", str(Path(self.work_dir) / "redis.log"),
             "--pidfile", str(Path(self.work_dir) / "redis.pid")],
            check=True, timeout=30,
        )
        wait_until_listening(self.port)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE: what it held is gone, as after a crash of a cache-only Redis."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis on {self.port} did not stop")

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class PrivateServices:
    postgres: PrivatePostgres
    redis: PrivateRedis

    def to_env(self) -> str:
        return json.dumps({"postgres": asdict(self.postgres), "redis": asdict(self.redis)})

    @classmethod
    def from_env(cls) -> PrivateServices | None:
        raw = os.environ.get(ENV)
        if not raw:
            return None
        data = json.loads(raw)
        return cls(postgres=PrivatePostgres(**data["postgres"]), redis=PrivateRedis(**data["redis"]))
