"""A development PKI for the DMP simulator: a test CA, the simulator's server certificate and
ESSMS organisation certificates (authentication + signature in one, as a dev shortcut).

It stands in for IGC-Santé (see ``docs/dmp.md``): the real DMP only trusts IGC-Santé
certificates tied to the structure's FINESS. Never use these files outside a test or a demo.

``create_dev_pki(folder)`` writes::

    ca.pem ca.key.pem                     the test CA
    server.pem server.key.pem             the simulator (CN/SAN localhost, 127.0.0.1)
    essms-<finess>.pem essms-<finess>.key.pem   one ESSMS organisation certificate
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.base import Credentials

__all__ = ["DevPki", "IssuedCert", "TestCa", "create_dev_pki"]


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.pem`` and ``<stem>.key.pem`` (0600) in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key.pem"
        cert_path.write_bytes(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.key_pem)
        return cert_path, key_path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TestCa:
    """A self-signed CA issuing server and organisation certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "DUI Gateway DEV CA (not IGC-Sante)") -> None:
        self._key = _key()
        now = datetime.now(UTC)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
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
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self._key)

    def _issue(
        self,
        subject: x509.Name,
        *,
        san: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
        not_before: datetime | None,
        not_after: datetime | None,
    ) -> IssuedCert:
        key = _key()
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def server_cert(self, host: str = "localhost") -> IssuedCert:
        """The simulator's TLS server certificate (SAN ``host``, ``localhost`` and ``127.0.0.1``)."""
        names: list[x509.GeneralName] = [x509.DNSName(host)]
        if host != "localhost":
            names.append(x509.DNSName("localhost"))
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        return self._issue(
            subject, san=names, usages=[ExtendedKeyUsageOID.SERVER_AUTH], not_before=None, not_after=None
        )

    def organisation_cert(
        self,
        finess: str,
        *,
        name: str = "ESSMS DEV",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> IssuedCert:
        """An ESSMS organisation certificate (client auth + signature), subject tied to its FINESS.

        As in IGC-Santé "personne morale" certificates, the structure identifier (``1`` + FINESS)
        is in the subject's OU; ``not_before``/``not_after`` let tests build expired certificates.
        """
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"1{finess}"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {finess}"),
            ]
        )
        return self._issue(
            subject,
            san=[],
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
            not_before=not_before,
            not_after=not_after,
        )


@dataclass(frozen=True)
class DevPki:
    """Paths of a development PKI written by :func:`create_dev_pki`."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    finess: str

    def credentials(self, tenant: str, **attributes: str) -> Credentials:
        """The dev ESSMS's DMP credentials (purpose ``dmp``), for a demo credentials provider.

        VIHF attributes default to an automaton acting for a named responsible person; pass
        ``vihf_subject_id``, ``vihf_role_code``... to change them.
        """
        attrs = {
            "vihf_subject_id": f"3{self.finess}/DUI-GATEWAY",
            "vihf_subject_name": "dui-gateway (démo)",
            "vihf_role_code": "10",
            "vihf_role_system": "1.2.250.1.71.1.2.7",
            "vihf_role_display": "Médecin",
            **attributes,
        }
        return Credentials(
            tenant=tenant,
            essms_finess=self.finess,
            purpose="dmp",
            certificate_pem=self.client_cert.read_bytes(),
            private_key_pem=self.client_key.read_bytes(),
            attributes=attrs,
        )


def create_dev_pki(folder: Path, *, finess: str = "750803447", host: str = "localhost") -> DevPki:
    """Create (or reuse, when already there) a dev CA, the simulator's server certificate and one
    ESSMS organisation certificate in ``folder``. Returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = DevPki(
        folder=folder,
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key.pem",
        client_cert=folder / f"essms-{finess}.pem",
        client_key=folder / f"essms-{finess}.key.pem",
        finess=finess,
    )
    if all(p.exists() for p in (paths.ca, paths.server_cert, paths.server_key, paths.client_cert, paths.client_key)):
        return paths
    ca = TestCa()
    IssuedCert(ca.cert_pem, ca.key_pem).write(folder, "ca")
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    ca.server_cert(host).write(folder, "server")
    ca.organisation_cert(finess).write(folder, f"essms-{finess}")
    return paths
