"""A throw-away development PKI for the mail sandbox and the tests: a CA standing in for
IGC-Santé, the relay's and IMAP server's certificate (``localhost`` / ``127.0.0.1``), the ESSMS's
client certificate, and a client certificate from a CA nobody trusts.

:class:`DevPki` generates everything in a folder (keys 0600); :meth:`DevPki.load_or_create`
reuses what a previous run left there while it is valid for at least a day, so a demo restarted
keeps the files its credentials file points at. Never use these certificates outside loopback.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.base import Credentials

__all__ = ["DevPki", "Issued", "TestPki"]

DEFAULT_CLIENT_CN = "EHPAD Saint-Joseph 750000010"


def _name(cn: str, org: str = "Test IGC-Sante") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path


class DevPki:
    """Files in ``folder``: ``ca.pem``, ``server.{pem,key}``, ``client.{pem,key}`` (the ESSMS,
    common name ``client_cn``), ``rogue.{pem,key}`` and ``other-ca.pem`` (a CA nobody trusts)."""

    __test__ = False  # not a pytest class

    def __init__(self, folder: Path, *, client_cn: str = DEFAULT_CLIENT_CN, days: int = 30) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        self.folder = folder
        self.client_cn = client_cn
        now = dt.datetime.now(dt.UTC)
        self._now = now
        self._days = days
        self.ca_key, self.ca = self._ca("Test AC IGC-Sante")
        self.ca_path = folder / "ca.pem"
        self.ca_path.write_bytes(_pem_cert(self.ca))
        self.server = self._issue("server", "localhost", self.ca, self.ca_key, server=True)
        self.client = self._issue("client", client_cn, self.ca, self.ca_key, server=False)
        rogue_key, rogue_ca = self._ca("Untrusted CA")
        self.rogue = self._issue("rogue", "Someone else", rogue_ca, rogue_key, server=False)
        self.other_ca_path = folder / "other-ca.pem"
        self.other_ca_path.write_bytes(_pem_cert(rogue_ca))
        (folder / "pki.json").write_text(
            json.dumps({"client_cn": client_cn, "not_after": (now + dt.timedelta(days=days)).isoformat()}) + "\n"
        )

    @classmethod
    def load_or_create(cls, folder: Path, *, client_cn: str = DEFAULT_CLIENT_CN) -> DevPki:
        """The PKI a previous run left in ``folder`` (same client CN, valid one more day), else a new one."""
        try:
            meta = json.loads((folder / "pki.json").read_text())
            not_after = dt.datetime.fromisoformat(meta["not_after"])
            if meta["client_cn"] == client_cn and not_after > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
                return cls._load(folder, client_cn)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return cls(folder, client_cn=client_cn)

    @classmethod
    def _load(cls, folder: Path, client_cn: str) -> DevPki:
        self = cls.__new__(cls)
        self.folder = folder
        self.client_cn = client_cn
        self._now = dt.datetime.now(dt.UTC)
        self._days = 30
        self.ca_path = folder / "ca.pem"
        self.other_ca_path = folder / "other-ca.pem"
        self.ca = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        self.ca_key = None

        def issued(stem: str) -> Issued:
            cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
            return Issued(cert_path.read_bytes(), key_path.read_bytes(), cert_path, key_path)

        self.server, self.client, self.rogue = issued("server"), issued("client"), issued("rogue")
        return self

    ca_key: CertificateIssuerPrivateKeyTypes | None

    def _ca(self, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - dt.timedelta(days=1))
            .not_valid_after(self._now + dt.timedelta(days=self._days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def _issue(
        self, stem: str, cn: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool
    ) -> Issued:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - dt.timedelta(days=1))
            .not_valid_after(self._now + dt.timedelta(days=self._days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    if server
                    else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_pem = _pem_cert(cert)
        key_pem = _pem_key(key)
        cert_path = self.folder / f"{stem}.pem"
        key_path = self.folder / f"{stem}.key"
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.chmod(0o600)
        key_path.write_bytes(key_pem)
        return Issued(cert_pem, key_pem, cert_path, key_path)

    def credentials(self, *, rogue: bool = False, mailbox: str | None = None, finess: str = "750000010") -> Credentials:
        """What the credentials provider would hand the connector for this ESSMS."""
        issued = self.rogue if rogue else self.client
        return Credentials(
            tenant="t1",
            essms_finess=finess,
            purpose="mssante",
            certificate_pem=issued.cert_pem,
            private_key_pem=issued.key_pem,
            attributes={"mailbox": mailbox} if mailbox else {},
        )


TestPki = DevPki  # the name the tests know
