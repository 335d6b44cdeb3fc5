"""The HTTP step (engine/steps/http.py, engine/http_client.py) against a local fake server.

The fake server listens on 127.0.0.1, a loopback address: each test allows its host:port
in the policy, as PROMPTPILOT_HTTP_ALLOWED_HOSTS would, except the refusal tests.
Names that must resolve elsewhere are made to by patching ``resolve_host`` (the resolver),
never the guard itself.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest

from providers.tests.fakes import FakeServer, Reply
from workflows.engine import http_client
from workflows.engine.http_client import HttpCredential, HttpPolicy, address_refusal
from workflows.engine.retry import retry_delay
from workflows.engine.runner import run_step, validate_definition
from workflows.engine.steps.http import DRY_RUN, HTTP_POLICY
from workflows.engine.types import COMPLETED, FAILED

from .helpers import make_context, make_step

SECRET = "sk-live-0123456789"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


def _hostport(server: FakeServer) -> str:
    return httpx.URL(server.url).netloc.decode()


def _policy(*servers: FakeServer, **fields) -> HttpPolicy:
    return HttpPolicy.of([_hostport(s) for s in servers], **fields)


def _run(config: dict, policy: HttpPolicy, inputs: dict | None = None, **limits):
    step = make_step("call", 0, "HTTP", config=config, retry_config={"max_retries": 2})
    return run_step(step, make_context(inputs or {}), providers=lambda name: None,
                    limits={HTTP_POLICY: policy, **limits})


def _credentials(hosts: set[str]):
    store = {"billing": HttpCredential("billing", {"Authorization": f"Bearer {SECRET}"}, frozenset(hosts))}
    return store.__getitem__


def test_post_renders_url_headers_and_body_and_parses_json(server) -> None:
    server.queue(Reply(201, {"id": 7, "ok": True}, {"X-Trace": "t-1"}))
    config = {"method": "POST", "url": server.url + "/orders/{{ input.customer }}?q={{ input.q | urlencode }}",
              "headers": {"Content-Type": "application/json", "X-User": "{{ input.customer }}"},
              "body": '{"qty": {{ input.qty }}}', "output_format": "json"}

    result = _run(config, _policy(server), {"customer": "c42", "q": "a b", "qty": 3})

    assert result.status == COMPLETED, result.error
    assert result.output["status"] == 201
    assert result.output["body"] == {"id": 7, "ok": True}
    assert result.output["headers"]["x-trace"] == "t-1"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/orders/c42?q=a%20b")
    assert seen.headers["x-user"] == "c42" and seen.json == {"qty": 3}
    assert result.input["url"] == server.url + "/orders/c42?q=a%20b"
    assert result.input["body"] == '{"qty": 3}'


def test_text_output_keeps_the_body_as_text(server) -> None:
    server.queue(Reply(200, "plain words"))
    result = _run({"url": server.url + "/"}, _policy(server))
    assert result.output["body"] == "plain words"


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(server, monkeypatch) -> None:
    port = httpx.URL(server.url).port
    lookups = []

    def resolver(host, port):
        lookups.append(host)
        return ["127.0.0.1"]  # no real DNS knows this name: only the pinned address can reach the server

    monkeypatch.setattr(http_client, "resolve_host", resolver)
    server.queue(Reply(200, "hi"))

    result = _run({"url": f"http://api.pinned.test:{port}/x"}, HttpPolicy.of([f"api.pinned.test:{port}"]))

    assert result.status == COMPLETED, result.error
    assert lookups == ["api.pinned.test"]
    assert server.requests[0].headers["host"] == f"api.pinned.test:{port}"


def test_a_loopback_port_that_is_not_allowed_is_refused_before_connecting(server) -> None:
    other = HttpPolicy.of(["127.0.0.1:1"])  # another port of the same host is allowed, not this one

    result = _run({"url": server.url + "/admin"}, other)

    assert result.status == FAILED
    assert result.error["type"] == "HttpRefused"
    assert "loopback" in result.error["message"] and "PROMPTPILOT_HTTP_ALLOWED_HOSTS" in result.error["message"]
    assert server.requests == []
    assert retry_delay({"max_retries": 2}, retry_count=0, result=result) is None


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(http_client, "resolve_host", lambda host, port: ["10.1.2.3"])

    result = _run({"url": "https://intranet.example.com/payroll"}, HttpPolicy())

    assert result.error["type"] == "HttpRefused"
    assert result.error["details"] == {"host": "intranet.example.com:443", "address": "10.1.2.3",
                                       "reason": "a private address"}


def test_any_refused_address_among_several_refuses_the_name(monkeypatch) -> None:
    monkeypatch.setattr(http_client, "resolve_host", lambda host, port: ["93.184.216.34", "127.0.0.1"])
    assert _run({"url": "http://mixed.example.com/"}, HttpPolicy()).error["type"] == "HttpRefused"


def test_a_redirect_to_a_refused_address_is_refused(server) -> None:
    target = FakeServer()
    try:
        server.queue(Reply(302, b"", {"Location": target.url + "/internal"}))
        result = _run({"url": server.url + "/start"}, _policy(server))
        assert result.error["type"] == "HttpRefused"
        assert _hostport(target) in result.error["message"]
        assert target.requests == []
    finally:
        target.close()


def test_a_redirect_to_cloud_metadata_is_refused(server) -> None:
    server.queue(Reply(301, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}))
    result = _run({"url": server.url + "/"}, _policy(server))
    assert result.error["type"] == "HttpRefused"
    assert result.error["details"]["reason"] == "a cloud metadata address"


def test_allowed_redirects_are_followed_and_limited(server) -> None:
    server.queue(Reply(302, b"", {"Location": "/next"}), Reply(200, "arrived"))
    followed = _run({"url": server.url + "/first"}, _policy(server))
    assert followed.output["body"] == "arrived"
    assert [r.path for r in server.requests] == ["/first", "/next"]

    server.default = lambda request: Reply(302, b"", {"Location": "/again"})
    looping = _run({"url": server.url + "/loop"}, _policy(server, max_redirects=2))
    assert looping.error["type"] == "TooManyRedirects"


def test_an_oversize_body_fails_the_step(server) -> None:
    server.queue(Reply(200, b"x" * 2048))
    result = _run({"url": server.url + "/big"}, _policy(server, max_response_bytes=1024))
    assert result.error["type"] == "ResponseTooLarge"
    assert retry_delay({"max_retries": 2}, retry_count=0, result=result) is None


def test_a_compressed_body_is_limited_by_its_decoded_size_while_streaming(server) -> None:
    bomb = gzip.compress(b"0" * (4 * 1024 * 1024))  # small on the wire, 4 MiB once decoded
    server.queue(Reply(200, bomb, {"Content-Encoding": "gzip"}))
    result = _run({"url": server.url + "/bomb"}, _policy(server))
    assert result.error["type"] == "ResponseTooLarge"
    assert "reading stopped" in result.error["message"]


def test_5xx_is_transient_and_4xx_is_not(server) -> None:
    server.queue(Reply(503, {"error": "busy"}), Reply(404, {"error": "no such order"}))
    unavailable = _run({"url": server.url + "/a"}, _policy(server))
    missing = _run({"url": server.url + "/b"}, _policy(server))

    assert unavailable.error["type"] == missing.error["type"] == "HttpStatusError"
    assert unavailable.error["details"]["status_code"] == 503 and unavailable.retryable
    assert retry_delay({"max_retries": 2}, retry_count=0, result=unavailable) is not None
    assert missing.error["details"]["status_code"] == 404 and not missing.retryable
    assert "no such order" in missing.error["details"]["body"]
    assert retry_delay({"max_retries": 2}, retry_count=0, result=missing) is None


def test_a_timeout_is_transient(server) -> None:
    server.queue(Reply(200, "late", delay=3))
    result = _run({"url": server.url + "/slow", "timeout_seconds": 0.5}, _policy(server))
    assert result.error["type"] == "HttpTimeout" and result.retryable


def test_a_json_body_that_does_not_parse_is_invalid_output(server) -> None:
    server.queue(Reply(200, "<html>oops</html>"))
    result = _run({"url": server.url + "/", "output_format": "json"}, _policy(server))
    assert result.error["type"] == "InvalidOutput"


def test_credential_headers_are_sent_but_never_recorded_or_returned(server) -> None:
    server.queue(Reply(200, {"echo": f"Bearer {SECRET}"}), Reply(401, {"seen": SECRET}))
    policy = _policy(server, credentials=_credentials({_hostport(server)}))
    config = {"url": server.url + "/me", "credential": "billing", "output_format": "json"}

    ok = _run(config, policy)
    refused = _run(config, policy)

    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert ok.input["headers"] == {"Authorization": "<credential billing>"}
    for result in (ok, refused):
        assert SECRET not in json.dumps([result.input, result.output, result.error])


def test_a_credential_goes_only_to_its_hosts_even_across_redirects(server) -> None:
    elsewhere = FakeServer()
    try:
        policy = _policy(server, elsewhere, credentials=_credentials({_hostport(server)}))
        direct = _run({"url": elsewhere.url + "/", "credential": "billing"}, policy)
        assert direct.error["type"] == "HttpRefused" and elsewhere.requests == []

        server.queue(Reply(302, b"", {"Location": elsewhere.url + "/landing"}))
        elsewhere.queue(Reply(200, "landed"))
        redirected = _run({"url": server.url + "/", "credential": "billing"}, policy)
        assert redirected.output["body"] == "landed"
        assert "authorization" not in elsewhere.requests[0].headers
    finally:
        elsewhere.close()


def test_dry_run_renders_and_sends_nothing(server) -> None:
    result = _run({"method": "POST", "url": server.url + "/{{ input.id }}", "body": "{{ input.id }}"},
                  _policy(server), {"id": "9"}, **{DRY_RUN: True})
    assert result.status == COMPLETED
    assert result.output["dry_run"] is True and result.input["url"] == server.url + "/9"
    assert server.requests == []


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.1.1", "0.0.0.0",
                                     "224.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
                                     "2002:7f00:1::", "240.0.0.1"])
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(address) is None


def test_save_time_checks_name_each_bad_field() -> None:
    step = {"name": "call", "order": 0, "type": "HTTP", "config": {
        "method": "FETCH", "url": "ftp://files.example.com/x", "headers": {"Host": "evil", "X-A": 3},
        "body": "{{ oops", "timeout_seconds": 0, "output_format": "xml", "verb": 1}}
    errors = validate_definition([step], [])
    for field in ("method", "url", "headers.Host", "headers.X-A", "body", "timeout_seconds", "output_format"):
        assert f"steps[0].config.{field}" in errors, (field, errors)
    assert "Unknown key(s) verb" in errors["steps[0].config"][0]
    assert validate_definition([{"name": "c", "order": 0, "type": "HTTP", "config": {}}], [])[
        "steps[0].config.url"] == ["is required."]
    get_with_body = {"name": "c", "order": 0, "type": "HTTP", "config": {"url": "https://a.example/", "body": "x"}}
    assert "carries no body" in validate_definition([get_with_body], [])["steps[0].config.body"][0]
    good = {"name": "c", "order": 0, "type": "HTTP", "config": {
        "method": "POST", "url": "https://api.example.com/{{ input.id }}", "headers": {"Accept": "application/json"},
        "body": "{{ input | tojson }}", "credential": "billing", "timeout_seconds": 10, "output_format": "json"}}
    assert validate_definition([good], []) == {}


def test_credential_values_never_reach_the_logs_even_at_debug(server, caplog) -> None:
    server.queue(Reply(500, {"error": "boom"}))
    policy = _policy(server, credentials=_credentials({_hostport(server)}))

    # The shipped LOGGING keeps httpx and httpcore at WARNING: open them up to DEBUG here.
    with caplog.at_level("DEBUG"), caplog.at_level("DEBUG", logger="httpx"), \
            caplog.at_level("DEBUG", logger="httpcore"):
        result = _run({"url": server.url + "/me", "credential": "billing"}, policy)

    assert result.error["type"] == "HttpStatusError"
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert caplog.records  # httpx and httpcore do log each request
    assert SECRET not in caplog.text
