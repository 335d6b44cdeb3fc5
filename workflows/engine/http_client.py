"""Outbound HTTP for HTTP steps (httpx), guarded against server-side request forgery.

Every hop, the first request and each redirect, goes through ``PinnedTransport``: it
resolves the host once (``resolve_host``), refuses loopback, private, link-local,
multicast, reserved and cloud metadata addresses unless ``host:port`` is listed in
``HttpPolicy.allowed_hosts`` (``PROMPTPILOT_HTTP_ALLOWED_HOSTS``), and connects to the
very address it checked (the URL's host is swapped for the IP; the ``Host`` header and
TLS SNI / certificate check keep the name), so a second DNS answer cannot slip past.
Redirects are followed here, at most ``max_redirects``; credential headers go only to
the hosts their credential names. Bodies are streamed and reading stops past
``max_response_bytes`` (counted after decompression).

Framework-free: the services hand the policy in (``limits["http"]``).
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import EngineError

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1024 * 1024  # DESIGN §8: bodies over 1 MiB fail the step
MAX_REDIRECTS = 5
ALLOWED_HOSTS_SETTING = "PROMPTPILOT_HTTP_ALLOWED_HOSTS"
SNIPPET_CHARS = 500

# Link-local or private already, but named so the refusal says what was being reached.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))


# --- errors -------------------------------------------------------------------------


class HttpRefused(EngineError):
    """The URL (or a redirect) points at an address HTTP steps may not reach. Not retried."""


class HttpStatusError(EngineError):
    """The server answered 4XX (not retried) or 5XX (transient)."""


class HttpTimeout(EngineError):
    default_retryable = True


class HttpConnectionError(EngineError):
    default_retryable = True


class ResponseTooLarge(EngineError):
    """The body is over the size limit; the same request would fetch it again. Not retried."""


class TooManyRedirects(EngineError):
    pass


# --- policy and credentials -----------------------------------------------------------


@dataclass(frozen=True)
class HttpCredential:
    """Headers a staff-defined credential adds, and the only hosts they may go to."""

    name: str
    headers: dict[str, str]
    hosts: frozenset[str]

    def __repr__(self) -> str:  # never print a secret, even in a traceback
        return f"HttpCredential(name={self.name!r}, headers=<{len(self.headers)} hidden>, hosts={sorted(self.hosts)})"

    def covers(self, url: httpx.URL) -> bool:
        host = (url.host or "").lower()
        return host in self.hosts or host_port(url) in self.hosts


@dataclass(frozen=True)
class HttpPolicy:
    allowed_hosts: frozenset[str] = frozenset()  # "host:port", lower case
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_redirects: int = MAX_REDIRECTS
    credentials: Callable[[str], HttpCredential] | None = None  # name -> credential; raises ConfigError
    before_call: Callable[[], None] | None = None  # e.g. give the database connection back
    verify: Any = True  # TLS verification as httpx takes it (True: the system's CAs via certifi; an SSLContext)

    @classmethod
    def of(cls, allowed_hosts: Any = (), **fields: Any) -> HttpPolicy:
        return cls(allowed_hosts=frozenset(str(h).strip().lower() for h in allowed_hosts or () if str(h).strip()),
                   **fields)


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    content: bytes
    encoding: str
    url: str
    redirects: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")


# --- the guard ------------------------------------------------------------------------


def host_port(url: httpx.URL) -> str:
    host = (url.host or "").lower()
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (one DNS lookup; an IP literal is itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_refusal(address: str) -> str | None:
    """Why HTTP steps may not connect to ``address``, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            ip = embedded
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, reason in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_unspecified or ip.is_reserved, "a reserved address"),
    ):
        if test:
            return reason
    return None if ip.is_global else "not a public address"


def checked_address(url: httpx.URL, policy: HttpPolicy) -> str:
    """The address to connect to for ``url``: resolved once, and refused (``HttpRefused``)
    unless public or ``host:port`` is allowed."""
    if url.scheme not in ("http", "https"):
        raise HttpRefused(f"HTTP steps only call http:// and https:// URLs, not {url.scheme}://.",
                          details={"url": str(url)})
    host = url.host or ""
    where = host_port(url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = resolve_host(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        permanent = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME
        raise HttpConnectionError(f'The host "{host}" could not be resolved ({exc}).', details={"host": host},
                                  retryable=not permanent) from None
    if not addresses:
        raise HttpConnectionError(f'The host "{host}" resolved to no address.', details={"host": host})
    if where not in policy.allowed_hosts:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                raise HttpRefused(
                    f'HTTP steps may not call {where}: it resolves to {address}, {reason}. If this host is meant to '
                    f'be reached, staff add "{where}" to {ALLOWED_HOSTS_SETTING}.',
                    details={"host": where, "address": address, "reason": reason},
                )
    return addresses[0]


class PinnedTransport(httpx.BaseTransport):
    """Checks each request's host and sends it to the address that was checked."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.policy = policy
        self._transports: dict[tuple[str, str, str, int | None], httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = checked_address(request.url, self.policy)
        hostname = request.url.host
        # One pool per (name, address): a connection made with one name's SNI is never reused for another.
        key = (request.url.scheme, hostname, address, request.url.port)
        transport = self._transports.get(key)
        if transport is None:
            transport = self._transports[key] = httpx.HTTPTransport(verify=self.policy.verify, trust_env=False)
        # A copy: the client builds redirects from the request it holds, which keeps the name.
        pinned = httpx.Request(
            request.method, request.url.copy_with(host=address), headers=request.headers,  # Host: the name
            stream=request.stream, extensions={**request.extensions, "sni_hostname": hostname},
        )
        return transport.handle_request(pinned)

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


# --- one call -------------------------------------------------------------------------


def http_call(
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: str | None,
    timeout_seconds: float,
    policy: HttpPolicy,
    credential: HttpCredential | None = None,
) -> HttpAnswer:
    """Send one request, following redirects under the guard; the answer of the last hop.
    Raises the errors above; a 4XX/5XX answer raises ``HttpStatusError``."""
    deadline = time.monotonic() + timeout_seconds
    secret_names = {name.lower() for name in (credential.headers if credential else {})}
    redirects: list[str] = []
    try:
        with httpx.Client(transport=PinnedTransport(policy), trust_env=False, follow_redirects=False,
                          timeout=httpx.Timeout(timeout_seconds)) as client:
            request = client.build_request(method, url, headers=_with_credential(headers, credential, url),
                                           content=body.encode() if body is not None else None)
            while True:
                response = client.send(request, stream=True)
                try:
                    if response.next_request is None:
                        return _answer(response, policy, deadline, timeout_seconds, redirects)
                finally:
                    response.close()
                if len(redirects) >= policy.max_redirects:
                    raise TooManyRedirects(
                        f"More than {policy.max_redirects} redirects, the last to {response.headers.get('location')}.",
                        details={"redirects": redirects})
                request = response.next_request
                redirects.append(str(request.url))
                if credential is not None and not credential.covers(request.url):
                    for name in list(request.headers):
                        if name.lower() in secret_names:
                            del request.headers[name]
    except httpx.TimeoutException:
        raise HttpTimeout(f"No answer from {_origin(url)} within {timeout_seconds:g} s.",
                          details={"timeout_seconds": timeout_seconds}) from None
    except httpx.TransportError as exc:
        # A certificate that does not verify fails the same way next time: not transient.
        untrusted = "CERTIFICATE_VERIFY_FAILED" in str(exc)
        raise HttpConnectionError(f"Could not reach {_origin(url)}: {type(exc).__name__}: {exc}",
                                  details={"url": _origin(url)}, retryable=not untrusted) from None


def _with_credential(headers: dict[str, str], credential: HttpCredential | None, url: str) -> dict[str, str]:
    if credential is None:
        return dict(headers)
    if not credential.covers(httpx.URL(url)):
        raise HttpRefused(
            f'The credential "{credential.name}" may only be sent to {", ".join(sorted(credential.hosts))}, '
            f"not {host_port(httpx.URL(url))}. Use one of those hosts, or have staff add this one to the "
            "credential in admin.",
            details={"credential": credential.name, "host": host_port(httpx.URL(url))},
        )
    return {**headers, **credential.headers}


def _answer(response: httpx.Response, policy: HttpPolicy, deadline: float, timeout_seconds: float,
            redirects: list[str]) -> HttpAnswer:
    limit = policy.max_response_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit and "content-encoding" not in response.headers:
        raise _too_large(response, limit, f"its Content-Length is {int(declared):,} bytes")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise _too_large(response, limit, "reading stopped there")
        if time.monotonic() > deadline:
            raise HttpTimeout(f"The answer took longer than {timeout_seconds:g} s to arrive.",
                              details={"timeout_seconds": timeout_seconds})
        chunks.append(chunk)
    content = b"".join(chunks)
    answer = HttpAnswer(
        status=response.status_code,
        headers={name.lower(): ", ".join(response.headers.get_list(name)) for name in response.headers.keys()},
        content=content,
        encoding=response.charset_encoding or "utf-8",
        url=str(response.request.url),
        redirects=redirects,
    )
    if response.status_code >= 400:
        retryable = response.status_code >= 500
        raise HttpStatusError(
            f"The server answered HTTP {response.status_code}"
            + (" (retried when retry_on has transient)." if retryable else "; fix the request, it is not retried."),
            details={"status_code": response.status_code, "body": answer.text()[:SNIPPET_CHARS]},
            retryable=retryable,
        )
    return answer


def _too_large(response: httpx.Response, limit: int, why: str) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"The response body is over the {limit:,}-byte limit ({why}). Ask the server for less (a filter, a page).",
        details={"limit_bytes": limit, "status_code": response.status_code},
    )


def _origin(url: str) -> str:
    # Errors name the host, not the whole URL: a query string may carry tokens.
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{host_port(parsed)}"
    except httpx.InvalidURL:
        return "the server"
