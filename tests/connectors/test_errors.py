"""connectors._errors: one mapping of requests / ssl / socket / smtplib failures, against real peers
where one can be had on loopback (HTTPS servers with bad certificates, closed ports)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors._errors import http_status_error, map_errors
from connectors.base import PermanentError, TransientError
from tests.peers import free_port


def _cert(folder: Path, *, expired: bool) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else (now, now + dt.timedelta(1))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def https_server(cert: Path, key: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_unknown_ca_is_a_permanent_tls_verification_failure(tmp_path: Path) -> None:
    cert, key = _cert(tmp_path, expired=False)
    with https_server(cert, key) as url, pytest.raises(PermanentError) as info, map_errors("dmp"):
        requests.get(url, timeout=5)
    assert str(info.value).startswith("TLS certificate verification failed: ")
    assert "(dmp)" in str(info.value)
    assert isinstance(info.value.__cause__, requests.exceptions.SSLError)
    # the same server is fine once its certificate is trusted
    with https_server(cert, key) as url, map_errors("dmp"):
        assert requests.get(url, timeout=5, verify=str(cert)).status_code == 200


def test_expired_certificate_is_permanent(tmp_path: Path) -> None:
    cert, key = _cert(tmp_path, expired=True)
    with https_server(cert, key) as url, pytest.raises(PermanentError, match="expired"), map_errors("dmp"):
        requests.get(url, timeout=5, verify=str(cert))


def test_plain_ssl_module_verification_error_is_permanent(tmp_path: Path) -> None:
    cert, key = _cert(tmp_path, expired=False)
    with https_server(cert, key) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(PermanentError, match="TLS certificate verification failed"), map_errors("mssante"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_network_failures_are_transient() -> None:
    port = free_port()
    with pytest.raises(TransientError, match="unreachable") as info, map_errors("webhook"):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert info.value.__cause__ is not None
    with pytest.raises(TransientError, match="unreachable"), map_errors("mllp"):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with pytest.raises(TransientError, match="timed out"), map_errors("mllp"):
        raise TimeoutError("timed out")
    with pytest.raises(TransientError, match="name resolution"), map_errors("mllp"):
        raise socket.gaierror(-2, "Name or service not known")


def test_configuration_mistakes_are_permanent() -> None:
    with pytest.raises(PermanentError, match="invalid"), map_errors("webhook"):
        requests.get("not a url", timeout=1)
    with pytest.raises(PermanentError, match="invalid URL"), map_errors("webhook"):
        requests.get("gopher://127.0.0.1/", timeout=1)


def test_smtp_replies_split_on_the_code_and_never_quote_the_reply() -> None:
    address = "jeanne.martin@example.org"
    with pytest.raises(PermanentError) as info, map_errors("mssante"):
        raise smtplib.SMTPRecipientsRefused({address: (550, f"5.1.1 <{address}> unknown".encode())})
    assert address not in str(info.value) and "550" in str(info.value)
    with pytest.raises(TransientError, match="deferred"), map_errors("mssante"):
        raise smtplib.SMTPRecipientsRefused({address: (452, b"4.2.2 mailbox full")})
    with pytest.raises(TransientError, match="451"), map_errors("mssante"):
        raise smtplib.SMTPDataError(451, b"try again later")
    with pytest.raises(PermanentError, match="535"), map_errors("mssante"):
        raise smtplib.SMTPAuthenticationError(535, b"bad credentials")
    with pytest.raises(TransientError, match="disconnected"), map_errors("mssante"):
        raise smtplib.SMTPServerDisconnected("gone")
    with pytest.raises(TransientError), map_errors("mssante"):
        raise smtplib.SMTPConnectError(554, b"no service")


def test_connector_errors_and_programming_errors_pass_through() -> None:
    with pytest.raises(PermanentError, match="mine"), map_errors("x"):
        raise PermanentError("mine")
    with pytest.raises(KeyError), map_errors("x"):
        raise KeyError("bug")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, TransientError),
        (503, TransientError),
        (429, TransientError),
        (408, TransientError),
        (400, PermanentError),
        (401, PermanentError),
        (422, PermanentError),
    ],
)
def test_http_status_error(status: int, kind: type[Exception]) -> None:
    error = http_status_error("fhir", status)
    assert isinstance(error, kind) and str(status) in str(error)
