"""HTTPS through the pinned transport: the connection goes to the checked address while
TLS still sends the name (SNI) and verifies the certificate against it."""
from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workflows.engine import http_client
from workflows.engine.http_client import HttpPolicy
from workflows.engine.runner import run_step
from workflows.engine.steps.http import HTTP_POLICY

from .helpers import make_context, make_step

NAME = "api.tls.test"


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Iterator[tuple[int, ssl.SSLContext, list[str]]]:
    folder: Path = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca = _cert("Test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(NAME, ca_key, ca_name, key, ca=False)
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    seen_sni: list[str] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "leaf.pem", folder / "key.pem")
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = f"host={self.headers['Host']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    yield httpd.server_address[1], client_context, seen_sni
    httpd.shutdown()
    httpd.server_close()


def _get(url: str, policy: HttpPolicy):
    return run_step(make_step("call", 0, "HTTP", config={"url": url}), make_context(), providers=lambda n: None,
                    limits={HTTP_POLICY: policy})


def test_https_to_a_pinned_address_keeps_the_name_for_sni_and_the_certificate(tls, monkeypatch) -> None:
    port, context, seen_sni = tls
    monkeypatch.setattr(http_client, "resolve_host", lambda host, port: ["127.0.0.1"])

    result = _get(f"https://{NAME}:{port}/", HttpPolicy.of([f"{NAME}:{port}"], verify=context))

    assert result.status == "COMPLETED", result.error
    assert result.output["body"] == f"host={NAME}:{port}"
    assert seen_sni[-1] == NAME


def test_a_certificate_for_another_name_is_refused(tls, monkeypatch) -> None:
    port, context, _ = tls
    monkeypatch.setattr(http_client, "resolve_host", lambda host, port: ["127.0.0.1"])

    result = _get(f"https://other.tls.test:{port}/", HttpPolicy.of([f"other.tls.test:{port}"], verify=context))

    assert result.status == "FAILED"
    assert result.error["type"] == "HttpConnectionError"
    assert "CERTIFICATE_VERIFY_FAILED" in result.error["message"]
    assert not result.retryable  # the same certificate fails the same way next time
