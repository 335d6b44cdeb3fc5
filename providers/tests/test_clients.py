"""providers/clients.py: one SDK client per (provider, base URL, key), shared by every call."""
from __future__ import annotations

import threading

from providers import clients
from providers.registry import get_adapter

from .fakes import Reply
from .wires import Wire, call


def _client_of(wire: Wire):
    adapter = get_adapter(wire.provider)
    return adapter.client_for(adapter.credentials())


def test_two_calls_reuse_one_client_and_its_connection(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(200, wire.success()), Reply(200, wire.success()))

    call(wire)
    first_client = _client_of(wire)
    call(wire)

    assert _client_of(wire) is first_client
    assert clients.cached_client_count() == 1
    first, second = fake_server.requests
    assert first.client_port == second.client_port  # the pooled keep-alive connection, no new handshake


def test_a_new_key_gets_a_new_client(wire: Wire, fake_server, provider_settings) -> None:
    before = _client_of(wire)
    provider_settings(**wire.settings(fake_server, api_key="another-key"))

    after = _client_of(wire)

    assert after is not before
    assert clients.cached_client_count() == 2


def test_concurrent_first_calls_build_one_client() -> None:
    built: list[object] = []
    start = threading.Barrier(8)
    results: list[object] = []

    def factory() -> object:
        client = object()
        built.append(client)
        return client

    def worker() -> None:
        start.wait()
        results.append(clients.get_client("p", "http://x", "k", factory))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(built) == 1
    assert all(result is built[0] for result in results)


def test_the_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(clients, "MAX_CLIENTS", 3)
    for index in range(5):
        clients.get_client("p", "http://x", f"key-{index}", object)

    assert clients.cached_client_count() == 3


def test_the_cache_key_does_not_hold_the_api_key() -> None:
    clients.get_client("p", "http://x", "sk-very-secret", object)

    assert "sk-very-secret" not in repr(clients._clients)


def test_threads_sharing_one_client_call_concurrently(wire: Wire, fake_server) -> None:
    # Parallel model calls share the pooled client: it must not serialise them.
    # One call first, so SDK imports and client creation are not inside the timed overlap
    # (under CPU load they can take longer than a call); then three at once, each slow
    # enough that a loaded machine still starts all three before the first one ends.
    fake_server.queue(Reply(200, wire.success()))
    call(wire)
    fake_server.queue(*(Reply(200, wire.success(), delay=1.0) for _ in range(3)))
    errors: list[BaseException] = []

    def one_call() -> None:
        try:
            call(wire)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=one_call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert errors == []
    assert clients.cached_client_count() == 1
    requests = fake_server.requests[1:]
    assert len(requests) == 3
    assert max(r.started for r in requests) < min(r.finished for r in requests)  # all three overlapped


def test_a_burst_as_large_as_the_worker_concurrency_reuses_its_connections_next_time(
        wire: Wire, fake_server, settings) -> None:
    # A worker running 150 attempts at once keeps 150 connections alive per provider client,
    # not the SDKs' default of 100, so a second burst reuses them.
    settings.CELERY_WORKER_CONCURRENCY = burst = 150
    fake_server.default = lambda request: Reply(200, wire.success(), delay=0.3)

    def calls() -> None:
        threads = [threading.Thread(target=call, args=(wire,)) for _ in range(burst)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    calls()
    first_ports = {r.client_port for r in fake_server.requests}
    calls()
    second_ports = {r.client_port for r in fake_server.requests[burst:]}

    assert len(fake_server.requests) == 2 * burst
    assert len(first_ports) <= burst
    # The SDKs' default pool keeps 100 alive: the second burst would open at least 50 anew. (A
    # few may still be replaced on a loaded machine, when the server is slow to read one.)
    new_connections = len(second_ports - first_ports)
    assert new_connections < burst - 100, f"{new_connections} new connections in the second burst"
