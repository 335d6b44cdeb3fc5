"""Real Celery worker and beat processes for integration and durability tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class ServiceProcess:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self._start = (name, argv, env, log_dir)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> set[int]:
        """The process and those of its group (a worker's pool processes)."""
        group = {self.proc.pid}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == self.proc.pid:
                        group.add(int(entry.name))
                except ProcessLookupError:
                    pass
        return group

    def task_pids(self) -> set[int]:
        """The processes that run a worker's tasks: its pool's, or itself (a thread pool)."""
        return (self.pids() - {self.proc.pid}) or {self.proc.pid}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not log {needle!r} within {timeout} s:\n{self.log()[-4000:]}")

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart_after_kill(self, ready_log: str) -> None:
        """SIGKILL the process and start the same command again in its place (same log file),
        as a supervisor would; returns once the new one has logged ``ready_log``."""
        self.kill()
        self._log.close()
        offset = len(self.log())
        self.__init__(*self._start)
        deadline = time.monotonic() + 60
        while ready_log not in self.log()[offset:]:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} did not restart:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self, grace: float = 10) -> None:
        self.request_stop()
        self.wait_stopped(grace)

    def request_stop(self) -> None:
        """SIGTERM (a warm shutdown), without waiting: see ``stop_all``."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)

    def wait_stopped(self, grace: float = 10) -> None:
        """After ``request_stop``: wait up to ``grace`` seconds, then SIGKILL."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def stop_all(processes: list[ServiceProcess], grace: float = 10) -> None:
    """Stop several processes at once: every warm shutdown overlaps, not one after another."""
    for process in processes:
        process.request_stop()
    for process in processes:
        process.wait_stopped(grace)


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "promptpilot", *args]


def start_worker(name: str, env: dict[str, str], log_dir: Path, *pool_args: str,
                 level: str | None = "info") -> ServiceProcess:
    """A worker started as the contract command starts it (the shipped pool and
    concurrency), unless ``pool_args`` (e.g. ``"--concurrency", "4"``) say otherwise. (For a
    prefork worker set ``PROMPTPILOT_WORKER_POOL=prefork`` in ``env``: Celery reads
    ``--pool prefork`` as no ``--pool`` at all and runs the configured pool.) ``level=None``:
    no ``-l``, so PROMPTPILOT_LOG_LEVEL decides, as in docker-compose."""
    worker = ServiceProcess(
        name,
        celery_argv("worker", *(("-l", level) if level else ()), "-n", f"{name}@%h", *pool_args,
                    "--without-gossip", "--without-mingle", "--without-heartbeat"),
        env,
        log_dir,
    )
    worker.wait_for_log("ready.", timeout=60)
    return worker


def start_beat(env: dict[str, str], log_dir: Path) -> ServiceProcess:
    beat = ServiceProcess(
        "beat",
        celery_argv("beat", "-l", "info", "-S", "celery.beat:PersistentScheduler",
                    "-s", str(log_dir / "beat-schedule"), "--max-interval", "1"),
        env,
        log_dir,
    )
    beat.wait_for_log("beat: Starting", timeout=60)
    return beat
