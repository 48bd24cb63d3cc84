"""Credentials of the ESSMS: the file provider (references only), the encrypted database store,
the CLI, and what reaches a connector's envelope."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from gateway import pipeline
from gateway.credentials import (
    CredentialsError,
    CredentialsProvider,
    _load_file,
    load_material,
    set_credentials,
)
from gateway.delivery import deliver_next
from gateway.storage.db import session_scope
from gateway.storage.models import AuditEvent, CredentialSet
from mappings import registry
from tests.gateway.engine.support import Clock, FakeConnector, make_runtime, submit, webhook_routing
from tests.support.doctype import NOTE


def _cert(common_name: str = "EHPAD Les Tilleuls") -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_file_entries_take_references_and_open_encrypted_keys(tmp_path: Path, monkeypatch) -> None:
    cert, key_pem = _cert()
    key = serialization.load_pem_private_key(key_pem, password=None)
    (tmp_path / "chain.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    monkeypatch.setenv("ESSMS_KEY_PASSWORD", "s3cret")
    path = tmp_path / "credentials.yaml"
    path.write_text(
        "credentials:\n"
        "  - tenant: demo\n    essms: '759900004'\n    purpose: dmp\n"
        f"    certificate: file:{tmp_path / 'chain.pem'}\n    private_key: file:{tmp_path / 'key.pem'}\n"
        "    private_key_password: env:ESSMS_KEY_PASSWORD\n"
        "    attributes: {vihf_role: '10'}\n"
    )
    entries = _load_file(path)
    material = entries[("demo", "759900004", "dmp")]
    assert material.certificate_pem == cert
    assert b"ENCRYPTED" not in (material.private_key_pem or b"")  # handed to connectors decrypted
    assert material.attributes == {"vihf_role": "10"}
    assert "s3cret" not in repr(material) and "BEGIN" not in repr(material)


def test_a_literal_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "credentials.yaml"
    path.write_text("credentials:\n  - {tenant: demo, essms: '*', purpose: mssante, password: hunter2}\n")
    with pytest.raises(CredentialsError, match=r"credentials/0/password: must be a reference") as caught:
        _load_file(path)
    assert "hunter2" not in str(caught.value)


def test_pkcs12_and_mismatched_material(tmp_path: Path) -> None:
    cert_pem, key_pem = _cert()
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    p12 = pkcs12.serialize_key_and_certificates(
        b"essms",
        key,
        cert,
        None,
        serialization.BestAvailableEncryption(b"pw"),  # type: ignore[arg-type]
    )
    material = load_material(pkcs12_data=p12, pkcs12_password=b"pw")
    assert material.certificate_pem == cert_pem and material.private_key_pem is not None
    with pytest.raises(CredentialsError, match="wrong password"):
        load_material(pkcs12_data=p12, pkcs12_password=b"nope")
    with pytest.raises(CredentialsError, match="needs its private key"):
        load_material(certificate=cert_pem)


def test_database_entries_are_encrypted_finess_wins_over_star_and_audited(session_factory, keyring, tenant) -> None:
    cert, key = _cert()
    star = load_material(certificate=cert, private_key=key, attributes={"which": "star"})
    exact = load_material(certificate=cert, private_key=key, attributes={"which": "exact"})
    with session_scope(session_factory) as session:
        set_credentials(session, keyring=keyring, tenant_id=tenant.id, essms_finess="*", purpose="dmp",
                        material=star, actor="user:ops")  # fmt: skip
        set_credentials(session, keyring=keyring, tenant_id=tenant.id, essms_finess=tenant.finess, purpose="dmp",
                        material=exact, actor="user:ops")  # fmt: skip
    provider = CredentialsProvider(keyring=keyring)
    with session_factory() as session:
        found = provider.get(session, tenant_id=tenant.id, essms_finess=tenant.finess, purpose="dmp")
        other = provider.get(session, tenant_id=tenant.id, essms_finess="123456789", purpose="dmp")
        none = provider.get(session, tenant_id=tenant.id, essms_finess=tenant.finess, purpose="mssante")
        rows = session.scalars(select(CredentialSet)).all()
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "credentials_set")).all()
    assert found is not None and found.attributes == {"which": "exact"} and found.essms_finess == tenant.finess
    assert other is not None and other.attributes == {"which": "star"}
    assert none is None
    assert all(b"BEGIN" not in bytes(r.data_ct) for r in rows)  # encrypted at rest
    assert len(events) == 2 and all("BEGIN" not in json.dumps(e.detail) for e in events)


@pytest.fixture
def _note_type() -> Any:
    registry.register(NOTE)
    yield
    registry.unregister(NOTE.code)


class _NeedsCredentials(FakeConnector):
    credentials_purpose: ClassVar[str] = "dmp"


@pytest.mark.usefixtures("_note_type")
def test_the_connector_gets_the_essms_credentials_and_waits_without_them(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = _NeedsCredentials()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("dmp"), connectors={"dmp": peer})
    submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    assert pipeline.process_next(rt, worker_id="w0", clock=clock)
    out = deliver_next(rt, worker_id="w1", clock=clock)
    assert out is not None and out.status == "pending" and "no dmp credentials" in (out.error or "")
    assert peer.calls == []  # never sent without the ESSMS's identity
    cert, key = _cert()
    with session_scope(session_factory) as session:
        set_credentials(session, keyring=keyring, tenant_id=tenant.id, essms_finess=tenant.finess, purpose="dmp",
                        material=load_material(certificate=cert, private_key=key), actor="user:ops")  # fmt: skip
    rt.credentials.forget()
    clock.advance(3600)
    out = deliver_next(rt, worker_id="w1", clock=clock)
    assert out is not None and out.status == "delivered"
    envelope = peer.accepted[0].envelope
    assert envelope.credentials is not None and envelope.credentials.certificate_pem == cert
    assert envelope.credentials.tenant == tenant.code and envelope.credentials.purpose == "dmp"


def test_cli_set_list_delete(tmp_path: Path, gateway_env: Any, tenant) -> None:
    cert, key = _cert()
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    env = {**os.environ, "MAILBOX_PASSWORD": "pa55"}
    exe = [str(Path(sys.executable).parent / "dui-gateway")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*exe, "credentials", *args], env=env, capture_output=True, text=True, timeout=60)

    done = run("set", "--tenant", tenant.code, "--essms", tenant.finess, "--purpose", "mssante",
               "--certificate", str(tmp_path / "c.pem"), "--private-key", str(tmp_path / "k.pem"),
               "--username", "secretariat", "--password-env", "MAILBOX_PASSWORD")  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = run("list", "--tenant", tenant.code)
    assert listed.returncode == 0 and '"purpose": "mssante"' in listed.stdout
    assert "pa55" not in listed.stdout + listed.stderr and "BEGIN" not in listed.stdout
    assert run("delete", "--tenant", tenant.code, "--essms", tenant.finess, "--purpose", "mssante").returncode == 0
    assert run("delete", "--tenant", tenant.code, "--essms", tenant.finess, "--purpose", "mssante").returncode == 1
    bad = run("set", "--tenant", tenant.code, "--essms", tenant.finess, "--purpose", "dmp",
              "--certificate", str(tmp_path / "c.pem"))  # fmt: skip
    assert bad.returncode == 2 and "needs its private key" in bad.stderr
