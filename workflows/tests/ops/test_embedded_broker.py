"""The embedded broker (promptpilot/common/embedded_broker.py) under concurrent processes.

Real producer, consumer and CPU hog processes (embedded_broker_stress.py) share one
broker folder, as web, worker and beat do under `make run`.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue

ROOT = Path(__file__).resolve().parents[3]
STRESS = Path(__file__).with_name("embedded_broker_stress.py")
TRANSPORT = "promptpilot.common.embedded_broker:Transport"
PROCESS_TIMEOUT = 120  # generous: the machine is shared and two hogs run on purpose


def spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(STRESS), *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=PROCESS_TIMEOUT)
    return process.returncode, out, err


def files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_three_producers_and_a_consumer_under_cpu_load_see_every_message_exactly_once(tmp_path):
    per_producer = 1667  # 5,001 messages in all
    hogs = [spawn("hog") for _ in range(2)]
    try:
        consumer = spawn("consume", str(tmp_path), str(tmp_path / "seen.txt"), str(3 * per_producer))
        time.sleep(0.5)  # the consumer polls while the producers write, as the worker does
        watcher = spawn("watch", str(tmp_path / "out"), str(tmp_path / "stop-watching"))
        producers = [spawn("produce", str(tmp_path), prefix, str(per_producer)) for prefix in "abc"]
        for producer in producers:
            code, _, err = finish(producer)
            assert code == 0, err
        code, _, err = finish(consumer)
        (tmp_path / "stop-watching").touch()
        watch_code, watch_out, watch_err = finish(watcher)
        assert code == 0, err
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    assert "Decode" not in err and "Traceback" not in err, err
    seen = (tmp_path / "seen.txt").read_text().split()
    expected = [f"{prefix}-{n}" for prefix in "abc" for n in range(per_producer)]
    assert len(seen) == len(expected)  # nothing twice
    assert set(seen) == set(expected)  # nothing lost
    assert watch_code == 0, watch_err
    checked, bad = map(int, watch_out.split())
    assert checked > 0 and bad == 0, f"{bad} of {checked} queue files were not whole messages"
    leftovers = {name: files(tmp_path / name) for name in ("out", "processing", "quarantine")}
    assert leftovers == {"out": [], "processing": [], "quarantine": []}


def test_the_unacked_messages_of_a_killed_consumer_are_delivered_again_once(tmp_path):
    code, _, err = finish(spawn("produce", str(tmp_path), "m", "20"))
    assert code == 0, err
    first = spawn("consume", str(tmp_path), str(tmp_path / "first.txt"), "20", "--hold", "5")
    assert first.stdout.readline().strip() == "holding"
    held = (tmp_path / "first.txt").read_text().split()
    assert len(held) == 5
    first.send_signal(signal.SIGKILL)  # no chance to give anything back itself
    first.wait(timeout=PROCESS_TIMEOUT)

    code, _, err = finish(spawn("consume", str(tmp_path), str(tmp_path / "second.txt"), "20"))
    assert code == 0, err
    lines = (tmp_path / "second.txt").read_text().splitlines()
    ids = [line.split()[0] for line in lines]
    assert sorted(ids) == sorted(f"m-{n}" for n in range(20))
    assert {line.split()[0] for line in lines if line.endswith(" redelivered")} == set(held)
    assert files(tmp_path / "processing") == []


def connect(base: Path) -> Connection:
    return Connection("filesystem://", transport=TRANSPORT, transport_options={
        "data_folder_in": str(base / "out"), "data_folder_out": str(base / "out"),
        "control_folder": str(base / "control"), "polling_interval": 0.01,
    })


def unit_queue() -> Queue:
    # New names per use: kombu binds a Queue to its first channel, and the transport's
    # in-process state remembers bindings that belong to an earlier test's folder.
    name = f"unit-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def test_an_unreadable_message_file_is_quarantined_and_the_next_one_delivered(tmp_path, caplog):
    with connect(tmp_path) as conn:
        queue = conn.SimpleQueue(unit_queue())
        # What kombu's own transport could leave for a reader: created, not yet written.
        # Named to sort before the whole message, so the consumer meets them first.
        (tmp_path / "out" / f"{1:020d}_empty.{queue.queue.name}.msg").write_bytes(b"")
        (tmp_path / "out" / f"{2:020d}_torn.{queue.queue.name}.msg").write_bytes(b'{"body": "eyJp')
        queue.put({"id": "whole"})
        with caplog.at_level(logging.ERROR, logger="promptpilot.common.embedded_broker"):
            message = queue.get(timeout=5)
        assert message.payload == {"id": "whole"}
        message.ack()
        queue.close()
    quarantined = sorted(p.name.split(".")[0] for p in files(tmp_path / "quarantine"))
    assert quarantined == [f"{1:020d}_empty", f"{2:020d}_torn"]
    assert [r.getMessage() for r in caplog.records].count("embedded_broker.message_quarantined") == 2
    assert files(tmp_path / "out") == [] and files(tmp_path / "processing") == []


def test_a_requeued_message_comes_back_redelivered_and_an_ack_removes_it(tmp_path):
    with connect(tmp_path) as conn:
        queue = conn.SimpleQueue(unit_queue())
        queue.put({"id": 1})
        first = queue.get(timeout=5)
        assert files(tmp_path / "out") == [] and len(files(tmp_path / "processing")) == 1  # claimed
        first.requeue()
        again = queue.get(timeout=5)
        assert again.payload == {"id": 1} and again.delivery_info["redelivered"] is True
        again.ack()
        assert files(tmp_path / "processing") == []
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.3)
        queue.close()


def test_closing_a_consumer_gives_its_unacked_messages_back(tmp_path):
    name = unit_queue().name
    with connect(tmp_path) as conn:
        queue = conn.SimpleQueue(name)
        queue.put({"id": 2})
        queue.get(timeout=5)  # never acked
        queue.close()
    with connect(tmp_path) as conn:
        queue = conn.SimpleQueue(name)
        message = queue.get(timeout=5)
        assert message.payload == {"id": 2}
        message.ack()
        queue.close()


def test_the_embedded_default_celery_app_uses_this_transport(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update({"PROMPTPILOT_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "promptpilot.settings"})
    code = "from promptpilot.celery import app; c = app.connection_for_write(); print(type(c.transport).__module__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "promptpilot.common.embedded_broker"


def test_a_consumer_that_acks_nothing_leaves_no_claimed_files(tmp_path):
    # Celery's remote control (ping, inspect) consumes with no_ack.
    with connect(tmp_path) as conn:
        queue = conn.SimpleQueue(unit_queue(), no_ack=True)
        for n in range(3):
            queue.put({"id": n})
        assert [queue.get(timeout=5).payload["id"] for _ in range(3)] == [0, 1, 2]
        queue.close()
    assert files(tmp_path / "out") == [] and files(tmp_path / "processing") == []
