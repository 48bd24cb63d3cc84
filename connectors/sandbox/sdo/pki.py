"""A throw-away PKI for the SI-SdO simulator: a CA, the server's certificate, one client certificate per ESSMS.

Real ESSMS authenticate with an IGC-Santé organisation certificate; the simulator only needs
something with the same shape: the client certificate's subject ``CN`` is the ESSMS's FINESS
(the simulator maps it to the ESSMS, like the SI-SdO maps an enrolled certificate). Keys are
EC P-256, valid one day; nothing here is fit for anything but loopback tests and the demo.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertPair", "SandboxPki"]


@dataclass(frozen=True)
class CertPair:
    certificate_pem: bytes
    private_key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class SandboxPki:
    """A CA that issues the simulator's server certificate and ESSMS client certificates."""

    def __init__(self) -> None:
        self._ca_key = _key()
        now = datetime.now(UTC) - timedelta(minutes=5)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dui-gateway SI-SdO sandbox CA")])
        self.ca_certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_pem = self.ca_certificate.public_bytes(serialization.Encoding.PEM)

    def _issue(self, subject: x509.Name, *, server: bool, names: list[x509.GeneralName] | None = None) -> CertPair:
        key = _key()
        now = datetime.now(UTC) - timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca_certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return CertPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def server(self, host: str = "127.0.0.1") -> CertPair:
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        return self._issue(subject, server=True, names=names)

    def client(self, finess: str, name: str = "ESSMS") -> CertPair:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, finess),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name[:64] or "ESSMS"),
            ]
        )
        return self._issue(subject, server=False)

    def write(self, directory: Path, pairs: dict[str, CertPair]) -> dict[str, Path]:
        """Write the CA and ``pairs`` (name -> pair) as ``<name>.crt``/``<name>.key`` (0600)."""
        directory.mkdir(parents=True, exist_ok=True)
        out = {"ca": directory / "ca.crt"}
        out["ca"].write_bytes(self.ca_pem)
        for name, pair in pairs.items():
            cert, key = directory / f"{name}.crt", directory / f"{name}.key"
            cert.write_bytes(pair.certificate_pem)
            key.touch(mode=0o600)
            key.write_bytes(pair.private_key_pem)
            out[name] = cert
            out[f"{name}-key"] = key
        return out
