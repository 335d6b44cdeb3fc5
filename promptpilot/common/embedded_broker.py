"""kombu's filesystem transport made safe for several processes: the `make run` broker.

kombu's own transport creates a message file and writes it afterwards, and its reader
moves and reads files without a lock, so a consumer can read an empty file and die on
``JSONDecodeError`` (issue 11). This subclass keeps kombu's folder layout and file names
and changes how a message moves between folders:

- **publish**: write the message under ``tmp/``, then ``os.replace`` it into the queue
  folder. A file in the queue folder is always complete.
- **claim**: a consumer renames a queue file into its own ``processing/<consumer>/``
  folder before reading it. ``rename`` is atomic, so exactly one consumer wins a message.
- **ack** deletes the claimed file; **reject with requeue** and **channel close** move it
  back into the queue folder (marked redelivered).
- **a dead consumer's messages come back**: each consumer process holds an exclusive
  ``flock`` on ``processing/<consumer>.lock`` for its lifetime; the kernel drops it when
  the process dies, however it dies. Consumers look for unlocked folders when they start
  and then every ``recovery_interval`` seconds, and move what they find back to the queue.
  Unlike Redis's visibility timeout this never hands a long-running task to a second
  worker while the first is alive.
- **an unreadable file never kills the worker**: it is moved to ``quarantine/`` and logged.

Guarantee: at-least-once delivery across crashes of any process; a message is lost only
if the disk is (no fsync: a power cut may drop the last messages; the database is the
source of truth and the reaper re-enqueues what the broker lost). One machine only.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from queue import Empty

from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def _atomic_write(path: Path, data: bytes, tmp_folder: Path) -> None:
    """Write ``data`` to ``path`` so that nobody ever sees a partial file."""
    tmp = tmp_folder / f"{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb", buffering=0) as handle:
        handle.write(data)
    os.replace(tmp, path)


class _ConsumerLease:
    """This process's claim folder, kept alive by an flock that dies with the process."""

    _lock = threading.Lock()
    _current: _ConsumerLease | None = None

    def __init__(self, processing: Path) -> None:
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.lock_path = processing / f"{self.name}{LOCK_SUFFIX}"
        # NOTE: lock file first, then the folder: a folder without a lock file is a dead
        # consumer's (or one being cleaned up), never a live one's.
        self._handle = open(self.lock_path, "wb")
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.folder = processing / self.name
        self.folder.mkdir(exist_ok=True)

    @classmethod
    def for_process(cls, processing: Path) -> _ConsumerLease:
        with cls._lock:
            lease = cls._current
            if lease is None or lease.folder.parent != processing:
                lease = cls._current = cls(processing)
            return lease

    @classmethod
    def _forget_after_fork(cls) -> None:
        # A forked child must not claim into its parent's folder: the parent's lock would
        # outlive the child's claims' owner. The inherited handle stays open (harmless).
        cls._lock = threading.Lock()
        cls._current = None


os.register_at_fork(after_in_child=_ConsumerLease._forget_after_fork)


class QoS(virtual.QoS):
    def ack(self, delivery_tag: str) -> None:
        super().ack(delivery_tag)
        self.channel._forget_claim(delivery_tag, requeue=False)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if not requeue:
            self.channel._forget_claim(delivery_tag, requeue=False)
        super().reject(delivery_tag, requeue=requeue)  # requeue goes through Channel._restore


class Channel(filesystem.Channel):
    QoS = QoS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for folder in (self.data_folder_in_path, self.data_folder_out_path, self.tmp_folder,
                       self.processing_folder, self.quarantine_folder, self.control_folder):
            folder.mkdir(parents=True, exist_ok=True)
        self._claims: dict[str, Path] = {}
        self._no_ack_queues: set[str] = set()  # Celery's pidbox consumers ack nothing
        self._listing: dict[str, list[str]] = {}  # per queue, newest first: pop() takes the oldest
        self._next_recovery = 0.0

    # -- folders (transport options; defaults are siblings of the queue folder)

    @property
    def data_folder_in_path(self) -> Path:
        return Path(self.data_folder_in)

    @property
    def data_folder_out_path(self) -> Path:
        return Path(self.data_folder_out)

    def _folder_option(self, name: str) -> Path:
        default = self.data_folder_in_path.parent / name
        return Path(self.transport_options.get(f"{name}_folder") or default)

    @property
    def tmp_folder(self) -> Path:
        return self._folder_option("tmp")

    @property
    def processing_folder(self) -> Path:
        return self._folder_option("processing")

    @property
    def quarantine_folder(self) -> Path:
        return self._folder_option("quarantine")

    @property
    def recovery_interval(self) -> float:
        return float(self.transport_options.get("recovery_interval", 5.0))

    # -- publish

    def _put(self, queue: str, payload: dict, **kwargs) -> None:
        # Zero-padded nanoseconds of the machine-wide monotonic clock: names sort in the
        # order messages were published, from any process (FIFO per queue).
        name = f"{time.monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        try:
            _atomic_write(self.data_folder_out_path / name, str_to_bytes(dumps(payload)), self.tmp_folder)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add message {name!r} to {self.data_folder_out}") from exc

    # -- consume

    def _get(self, queue: str) -> dict:
        if time.monotonic() >= self._next_recovery:
            self._next_recovery = time.monotonic() + self.recovery_interval
            self.recover_dead_consumers()
        lease = _ConsumerLease.for_process(self.processing_folder)
        suffix = f".{queue}.msg"
        for _attempt in range(2):  # the cached listing, then a fresh one
            names = self._listing.get(queue)
            if not names:
                names = self._listing[queue] = sorted(
                    (n for n in os.listdir(self.data_folder_in_path) if n.partition(".")[2] == suffix[1:]),
                    reverse=True,
                )
            while names:
                name = names.pop()
                claimed = lease.folder / name
                try:
                    os.rename(self.data_folder_in_path / name, claimed)
                except FileNotFoundError:  # another consumer won it
                    continue
                payload = self._read_claimed(claimed)
                if payload is None:
                    continue
                tag = payload.get("properties", {}).get("delivery_tag")
                if tag and queue not in self._no_ack_queues:
                    self._claims[tag] = claimed
                else:  # nobody will ack it: delivered once is done
                    claimed.unlink(missing_ok=True)
                return payload
        raise Empty()

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._forget_claim(message.delivery_tag, requeue=False)
        return message

    def _read_claimed(self, claimed: Path) -> dict | None:
        try:
            payload = loads(bytes_to_str(claimed.read_bytes()))
            if not isinstance(payload, dict):
                raise ValueError("a message must be a JSON object")
            return payload
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            target = self.quarantine_folder / claimed.name
            try:
                os.replace(claimed, target)
            except OSError:
                target = claimed
            logger.error("embedded_broker.message_quarantined", extra={"file": str(target), "error": repr(exc)})
            return None

    def _forget_claim(self, delivery_tag: str, *, requeue: bool) -> None:
        claimed = self._claims.pop(delivery_tag, None)
        if claimed is not None and not requeue:
            claimed.unlink(missing_ok=True)

    def _restore(self, message) -> None:
        """Give an unacked message back: its claimed file returns to the queue folder."""
        claimed = self._claims.pop(message.delivery_tag, None)
        if claimed is None or not claimed.exists():
            return super()._restore(message)
        self._requeue_file(claimed)

    def _requeue_file(self, claimed: Path) -> None:
        try:
            payload = loads(bytes_to_str(claimed.read_bytes()))
            # Where kombu's Redis transport marks it, so Celery's reject_on_worker_lost
            # requeues a lost task once, not forever.
            payload["redelivered"] = True
            payload.setdefault("headers", {})["redelivered"] = True
            payload.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
            # NOTE: rewrite in place first, then move: a crash in between leaves the file in
            # a dead consumer's folder, which recovery moves back later. Never two copies.
            _atomic_write(claimed, str_to_bytes(dumps(payload)), self.tmp_folder)
            os.rename(claimed, self.data_folder_in_path / claimed.name)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.error("embedded_broker.requeue_failed", extra={"file": str(claimed), "error": repr(exc)})

    def recover_dead_consumers(self) -> int:
        """Move the claims of consumers whose process is gone back to the queue folder."""
        recovered = 0
        processing = self.processing_folder
        own = _ConsumerLease._current
        for entry in os.listdir(processing):
            path = processing / entry
            if entry.endswith(LOCK_SUFFIX) or (own is not None and path == own.folder):
                continue
            lock_path = processing / f"{entry}{LOCK_SUFFIX}"
            try:
                handle = open(lock_path, "rb")
            except FileNotFoundError:
                handle = None  # its owner is gone and half cleaned up
            try:
                if handle is not None:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # alive
                for name in sorted(os.listdir(path)) if path.is_dir() else []:
                    self._requeue_file(path / name)
                    recovered += 1
                try:
                    path.rmdir()
                    lock_path.unlink(missing_ok=True)
                except OSError:
                    pass
            finally:
                if handle is not None:
                    handle.close()
        if recovered:
            logger.warning("embedded_broker.recovered_messages", extra={"count": recovered})
        return recovered

    # -- bindings: the exchange tables, replaced atomically under one lock

    def get_table(self, exchange: str) -> list:
        try:
            return [filesystem.exchange_queue_t(*q) for q in loads(self._exchange_file(exchange).read_bytes())]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot open the table of {exchange!r}") from exc

    def _update_table(self, exchange: str, change) -> None:
        with open(self.control_folder / ".tables.lock", "wb") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            queues = self.get_table(exchange)
            updated = change(list(queues))
            if updated != queues:
                _atomic_write(self._exchange_file(exchange), str_to_bytes(dumps(updated)), self.tmp_folder)

    def _queue_bind(self, exchange, routing_key, pattern, queue) -> None:
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda queues: queues if binding in queues else [binding, *queues])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs) -> None:
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda queues: [q for q in queues if q != binding])


class Transport(filesystem.Transport):
    Channel = Channel
    global_state = virtual.BrokerState()
