"""A scripted HTTP server that speaks the OpenAI, Anthropic and Gemini wire formats.

The real SDKs are pointed at it through their base URL, so tests exercise the SDK, the
adapter and the network stack together. Each test queues the responses it wants
(status, headers, body, delay, or "never answer") and reads back every request the
server saw (path, headers, JSON body, start and end times, client port).
"""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_LIMIT_SECONDS = 30.0  # a hanging handler gives up after this, so a broken test cannot wedge the suite


@dataclass
class Reply:
    """One scripted answer. ``body``: a dict/list is sent as JSON, str/bytes as they are."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False  # accept the request and never answer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes
    client_port: int
    started: float
    finished: float | None = None  # when the answer was sent; None if it never was
    disconnected: float | None = None  # when the client closed the connection before the answer

    @property
    def aborted(self) -> bool:
        """The client gave up on this request (closed its connection) before it was answered."""
        return self.disconnected is not None and self.finished is None

    @property
    def json(self) -> Any:
        return json.loads(self.raw_body) if self.raw_body else None


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 resets connections when a burst of calls (a
    # worker's hundred threads) connects at once.
    request_queue_size = 1024


class FakeServer:
    """A threaded HTTP/1.1 server on 127.0.0.1:<free port>, answering from a queue."""

    def __init__(self, default: Callable[[Recorded], Reply] | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.default = default or (lambda request: Reply(500, {"error": {"message": "no reply scripted"}}))
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def queue(self, *replies: Reply) -> FakeServer:
        with self._lock:
            self.replies.extend(replies)
        return self

    def next_reply(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self.replies:
                return self.replies.popleft()
        return self.default(request)

    def wait_released(self, connection: socket.socket | None = None) -> bool:
        """Wait until ``close()`` (or the hang limit); False when the client of
        ``connection`` closed it first."""
        deadline = time.monotonic() + HANG_LIMIT_SECONDS
        while not self._release.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if connection is not None and not wait_unless_closed(connection, min(remaining, 0.05)):
                return False
            if connection is None:
                self._release.wait(remaining)
        return True

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close(self) -> None:
        self._release.set()  # hanging handlers return and their threads end
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # keep-alive handlers would otherwise serve on
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)


def unused_port_url() -> str:
    """A URL where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def wait_unless_closed(connection: socket.socket, seconds: float) -> bool:
    """Sleep ``seconds``, watching the connection: False as soon as the client closes it.

    A client that gives up on a request (a cancelled task, a timeout) closes its
    connection; the server sees it readable with nothing left to read.
    """
    deadline = time.monotonic() + seconds
    try:
        readable, _, _ = select.select([connection], [], [], seconds)
        if not readable:
            return True
        if connection.recv(1, socket.MSG_PEEK) == b"":
            return False
    except OSError:  # reset by the client
        return False
    # Bytes waiting (a pipelined request): nothing to watch for until the answer.
    time.sleep(max(deadline - time.monotonic(), 0))
    return True


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet test output)
            pass

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate writes: without this, Nagle's algorithm
            # holds the body until the client's delayed ACK (~40 ms a response).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server.track(self.connection, open_=True)

        def finish(self) -> None:
            server.track(self.connection, open_=False)
            super().finish()

        def do_GET(self) -> None:  # noqa: N802
            self._answer()

        def do_POST(self) -> None:  # noqa: N802
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            record = Recorded(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                raw_body=raw,
                client_port=self.client_address[1],
                started=time.monotonic(),
            )
            reply = server.next_reply(record)
            if reply.hang:
                if not server.wait_released(self.connection):
                    record.disconnected = time.monotonic()
                self.close_connection = True
                return
            if reply.delay and not wait_unless_closed(self.connection, reply.delay):
                record.disconnected = time.monotonic()
                self.close_connection = True
                return
            body = reply.body
            if isinstance(body, (dict, list)):
                payload, content_type = json.dumps(body).encode(), "application/json"
            elif isinstance(body, str):
                payload, content_type = body.encode(), "application/json"
            else:
                payload, content_type = (body or b""), "application/json"
            # Stamped before the bytes leave: the client may read them and a test look at this
            # record before this thread runs again.
            record.finished = time.monotonic()
            try:
                self.send_response(reply.status)
                headers = {"Content-Type": content_type, **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                record.finished = None  # never delivered

    return Handler


# --- wire formats -----------------------------------------------------------------------


def openai_completion(
    content: str = "Hello from OpenAI",
    *,
    prompt_tokens: int = 11,
    completion_tokens: int = 4,
    total_tokens: int | None = None,
    finish_reason: str = "stop",
    model: str = "gpt-x",
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens if total_tokens is None else total_tokens,
        },
    }


def openai_error(message: str, *, type: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def anthropic_message(
    content: str = "Hello from Claude",
    *,
    input_tokens: int = 12,
    output_tokens: int = 5,
    stop_reason: str = "end_turn",
    model: str = "claude-x",
) -> dict[str, Any]:
    return {
        "id": "msg_123",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": content}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def anthropic_error(message: str, *, type: str = "invalid_request_error") -> dict[str, Any]:  # noqa: A002
    return {"type": "error", "error": {"type": type, "message": message}}


def gemini_response(
    content: str = "Hello from Gemini",
    *,
    prompt_tokens: int = 13,
    candidates_tokens: int = 6,
    total_tokens: int | None = None,
    finish_reason: str = "STOP",
    response_id: str = "gem-resp-1",
) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": content}]}, "finishReason": finish_reason, "index": 0}
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidates_tokens,
            "totalTokenCount": prompt_tokens + candidates_tokens if total_tokens is None else total_tokens,
        },
        "modelVersion": "gemini-x",
        "responseId": response_id,
    }


def gemini_error(code: int, message: str, status: str, *, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}
