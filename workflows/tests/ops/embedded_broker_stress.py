"""Producer, consumer and CPU hog processes for test_embedded_broker.py (no Django).

    python embedded_broker_stress.py produce FOLDER PREFIX COUNT
    python embedded_broker_stress.py consume FOLDER OUT_FILE EXPECTED [--hold N]
    python embedded_broker_stress.py watch FOLDER STOP_FILE
    python embedded_broker_stress.py hog

The consumer appends each message id it receives to OUT_FILE (one a line, flushed before
the ack) and exits 0 once it has EXPECTED of them; with ``--hold N`` it acks nothing,
prints ``holding`` after N messages and sleeps, to be killed as a dead consumer. The
watcher reads every file that appears in the queue folder until STOP_FILE exists and
prints ``checked bad``: a file that is not a whole JSON message is one a consumer could
have half-read.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from kombu import Connection, Consumer, Exchange, Producer, Queue

TRANSPORT = "promptpilot.common.embedded_broker:Transport"
QUEUE = Queue("stress", Exchange("stress", type="direct"), routing_key="stress")
IDLE_LIMIT_SECONDS = 90.0


def connect(folder: str) -> Connection:
    base = Path(folder)
    (base / "out").mkdir(parents=True, exist_ok=True)
    return Connection(
        "filesystem://",
        transport=TRANSPORT,
        transport_options={
            "data_folder_in": str(base / "out"),
            "data_folder_out": str(base / "out"),
            "control_folder": str(base / "control"),
            "polling_interval": 0.01,
            "recovery_interval": 0.5,
        },
    )


def produce(folder: str, prefix: str, count: int) -> int:
    with connect(folder) as conn:
        producer = Producer(conn.channel(), exchange=QUEUE.exchange, routing_key="stress", serializer="json")
        producer.declare()
        QUEUE.bind(conn.default_channel).declare()
        for number in range(count):
            producer.publish({"id": f"{prefix}-{number}"}, declare=[QUEUE])
    return 0


def consume(folder: str, out_file: str, expected: int, hold: int | None) -> int:
    seen = 0
    with connect(folder) as conn, open(out_file, "a", buffering=1) as out:
        def on_message(body, message) -> None:
            nonlocal seen
            out.write(f"{body['id']}{' redelivered' if message.delivery_info.get('redelivered') else ''}\n")
            seen += 1
            if hold is None:
                message.ack()
            elif seen >= hold:
                print("holding", flush=True)
                time.sleep(3600)

        channel = conn.channel()
        consumer = Consumer(channel, [QUEUE], callbacks=[on_message], accept=["json"])
        channel.basic_qos(0, hold or 0, False)
        with consumer:
            last = time.monotonic()
            while seen < expected:
                before = seen
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
                if seen != before:
                    last = time.monotonic()
                elif time.monotonic() - last > IDLE_LIMIT_SECONDS:
                    print(f"gave up: {seen} of {expected} after {IDLE_LIMIT_SECONDS:g} s idle", file=sys.stderr)
                    return 1
    return 0


def watch(folder: str, stop_file: str) -> int:
    checked = bad = 0
    end = time.monotonic() + IDLE_LIMIT_SECONDS
    while time.monotonic() < end and not os.path.exists(stop_file):
        for name in os.listdir(folder):
            try:
                data = (Path(folder) / name).read_bytes()
            except FileNotFoundError:  # claimed in the meantime
                continue
            checked += 1
            try:
                json.loads(data)
            except ValueError:
                bad += 1
    print(checked, bad, flush=True)
    return 0


def hog() -> int:
    while True:
        sum(i * i for i in range(10_000))


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "produce":
        sys.exit(produce(args[0], args[1], int(args[2])))
    if role == "consume":
        hold = int(args[args.index("--hold") + 1]) if "--hold" in args else None
        sys.exit(consume(args[0], args[1], int(args[2]), hold))
    if role == "watch":
        sys.exit(watch(args[0], args[1]))
    if role == "hog":
        sys.exit(hog())
    sys.exit(f"unknown role {role!r}")
