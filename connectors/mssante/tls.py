"""TLS client contexts presenting the ESSMS's certificate (IGC-Santé organisation certificate).

``ssl`` loads a certificate chain only from files: the PEM handed by the credentials provider is
written to a private temporary folder (mode 0700, files 0600), loaded, and removed at once.
Contexts are cached per (CA bundle, certificate digest) so a worker does not reload them for
every message.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import threading
from pathlib import Path

from connectors.base import Credentials, PermanentError

__all__ = ["client_context"]

_CACHE: dict[tuple[str, bool, str, str], ssl.SSLContext] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 64


def _load_pem_chain(ctx: ssl.SSLContext, certificate_pem: bytes, private_key_pem: bytes, password: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="mss-tls-") as folder:
        os.chmod(folder, 0o700)
        cert_path = Path(folder) / "cert.pem"
        key_path = Path(folder) / "key.pem"
        for path, data in ((cert_path, certificate_pem), (key_path, private_key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(str(cert_path), str(key_path), password=password)


def _passphrase(credentials: Credentials | None) -> str | None:
    """The private key's passphrase, when it has one: the secret named ``key_passphrase``."""
    if credentials is None:
        return None
    values = credentials.secrets.get("key_passphrase") or ()
    return values[0] if values else None


def client_context(
    *,
    ca_bundle: str | None,
    verify: bool,
    credentials: Credentials | None,
    certificate_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A TLS 1.2+ client context; the client certificate comes from ``credentials`` (PEM) or files."""
    cert_pem = credentials.certificate_pem if credentials is not None else None
    key_pem = credentials.private_key_pem if credentials is not None else None
    if cert_pem and key_pem:
        digest = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
    elif certificate_file:
        digest = f"file:{certificate_file}:{key_file or ''}"
    else:
        digest = "-"
    passphrase = _passphrase(credentials)
    key = (ca_bundle or "", verify, digest, hashlib.sha256((passphrase or "").encode()).hexdigest())
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_bundle or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        if cert_pem and key_pem:
            _load_pem_chain(ctx, cert_pem, key_pem, passphrase)
        elif certificate_file:
            ctx.load_cert_chain(certificate_file, key_file or None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise PermanentError(
            "TLS: the ESSMS client certificate or its key could not be loaded (PEM chain and matching key expected)"
        ) from exc
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = ctx
    return ctx
