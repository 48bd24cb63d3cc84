"""What the DMP requires to trust a submission: the ESSMS's certificate for mutual TLS, a signed
SAML 2.0 VIHF assertion (WS-Security) and the XAdES signature of the submission set.

Signing and canonicalisation are signxml's (XML-DSig, exc-c14n, RSA-SHA256; XAdES); certificates
are read with cryptography. Nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureConstructionMethod
from signxml.signer import XMLSigner
from signxml.xades.xades import XAdESSigner

from connectors.base import Credentials
from connectors.dmp._xml import NS, q

__all__ = [
    "CredentialError",
    "OrgIdentity",
    "TlsFiles",
    "VihfProfile",
    "load_identity",
    "sign_submission_set",
    "vihf_assertion",
]

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
X509_SUBJECT = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
DSG_FORMAT = "urn:ihe:iti:dsg:detached:2014"


class CredentialError(ValueError):
    """The ESSMS's credentials cannot be used (missing, expired, unreadable): an operator must act."""


@dataclass(frozen=True)
class OrgIdentity:
    """The ESSMS's organisation certificate (TLS) and signing certificate (VIHF, XAdES)."""

    cert_pem: bytes  # leaf first, then the chain
    key_pem: bytes
    signing_cert_pem: bytes
    signing_key_pem: bytes
    subject: str
    signing_subject: str
    fingerprint: str


def _pem_or_p12(cert: bytes, key: bytes | None, password: str | None, what: str) -> tuple[bytes, bytes]:
    if b"-----BEGIN" in cert:
        if not key:
            raise CredentialError(f"the {what} has no private key")
        return cert, key
    try:  # PKCS#12 (DER), protected by the credentials' password
        p_key, p_cert, extra = pkcs12.load_key_and_certificates(cert, password.encode() if password else None)
    except ValueError as exc:
        raise CredentialError(f"the {what} is neither PEM nor a readable PKCS#12 file") from exc
    if p_key is None or p_cert is None:
        raise CredentialError(f"the {what} PKCS#12 file has no key or no certificate")
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [p_cert, *(extra or [])])
    key_pem = p_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, key_pem


def _check_pair(cert_pem: bytes, key_pem: bytes, what: str, now: datetime) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise CredentialError(f"the {what} or its key cannot be read (PEM expected)") from exc
    subject = cert.subject.rfc4514_string()
    if now > cert.not_valid_after_utc:
        raise CredentialError(
            f"the ESSMS {what} ({subject}) expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
            "renew it (IGC-Santé) and update the ESSMS credentials"
        )
    if now < cert.not_valid_before_utc:
        raise CredentialError(f"the ESSMS {what} ({subject}) is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise CredentialError(f"the private key does not match the ESSMS {what} ({subject})")
    return cert


def load_identity(credentials: Credentials | None, *, now: datetime | None = None) -> OrgIdentity:
    """The ESSMS identity for the DMP, checked (present, readable, in its validity period)."""
    if credentials is None:
        raise CredentialError("no DMP credentials for this ESSMS (organisation certificate and key)")
    if not credentials.certificate_pem or (
        not credentials.private_key_pem and b"-----BEGIN" in (credentials.certificate_pem or b"")
    ):
        raise CredentialError(
            f"the DMP credentials of ESSMS {credentials.essms_finess} lack the organisation certificate or its key"
        )
    moment = now or datetime.now(UTC)
    cert_pem, key_pem = _pem_or_p12(
        credentials.certificate_pem, credentials.private_key_pem, credentials.password, "organisation certificate"
    )
    cert = _check_pair(cert_pem, key_pem, "organisation certificate", moment)
    if credentials.signing_certificate_pem:
        s_cert_pem, s_key_pem = _pem_or_p12(
            credentials.signing_certificate_pem,
            credentials.signing_key_pem,
            credentials.password,
            "signing certificate",
        )
        s_cert = _check_pair(s_cert_pem, s_key_pem, "signing certificate", moment)
    else:
        s_cert_pem, s_key_pem, s_cert = cert_pem, key_pem, cert
    return OrgIdentity(
        cert_pem=cert_pem,
        key_pem=key_pem,
        signing_cert_pem=s_cert_pem,
        signing_key_pem=s_key_pem,
        subject=cert.subject.rfc4514_string(),
        signing_subject=s_cert.subject.rfc4514_string(),
        fingerprint=hashlib.sha256(cert_pem + key_pem).hexdigest(),
    )


class TlsFiles:
    """Certificate/key files for ``requests`` (which only takes paths), in a private 0700 folder.

    One pair per identity, written once; :meth:`close` removes the folder.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._paths: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def paths(self, identity: OrgIdentity) -> tuple[str, str]:
        with self._lock:
            found = self._paths.get(identity.fingerprint)
            if found is not None:
                return found
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="dui-dmp-tls-"))
            cert_path = self._dir / f"{identity.fingerprint[:32]}.pem"
            key_path = self._dir / f"{identity.fingerprint[:32]}.key.pem"
            cert_path.write_bytes(identity.cert_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(identity.key_pem)
            self._paths[identity.fingerprint] = (str(cert_path), str(key_path))
            return self._paths[identity.fingerprint]

    def close(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir, self._paths = None, {}


# -- VIHF -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VihfProfile:
    """The VIHF attributes (spec §4), from the ESSMS's credential attributes and the settings."""

    subject_id: str  # NameID: idNatPS of the responsible person (or of the structure's automaton)
    subject_name: str  # "Nom Prénom" or the software name for an automaton
    structure_id: str  # Identifiant_Structure: "1" + FINESS
    sector: str  # Secteur_Activite, e.g. "SA17^1.2.250.1.71.4.2.4"
    role_code: str
    role_system: str
    role_display: str
    lps_name: str
    lps_version: str
    lps_homologation: str
    vihf_version: str = "3.0"
    purpose_code: str = "normal"
    purpose_system: str = "1.2.250.1.213.1.1.4.248"
    lifetime: timedelta = timedelta(minutes=5)


def _attribute(statement: Any, name: str, value: str | Any) -> None:
    attr = etree.SubElement(statement, q("saml", "Attribute"), Name=name)
    av = etree.SubElement(attr, q("saml", "AttributeValue"))
    if isinstance(value, str):
        av.text = value
    else:
        av.append(value)


def _ce(tag: str, code: str, system: str, display: str) -> Any:
    el = etree.Element(
        f"{{{NS['hl7']}}}{tag}",
        nsmap={None: NS["hl7"], "xsi": "http://www.w3.org/2001/XMLSchema-instance"},
    )
    el.set("{http://www.w3.org/2001/XMLSchema-instance}type", "CE")
    el.set("code", code)
    el.set("codeSystem", system)
    if display:
        el.set("displayName", display)
    return el


def vihf_assertion(identity: OrgIdentity, profile: VihfProfile, *, patient_cx: str, now: datetime | None = None) -> Any:
    """The signed SAML 2.0 VIHF assertion (enveloped XML-DSig, exc-c14n, RSA-SHA256)."""
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    assertion_id = f"_{uuid.uuid4()}"
    a = etree.Element(
        q("saml", "Assertion"),
        nsmap={"saml": NS["saml"]},
        ID=assertion_id,
        IssueInstant=stamp,
        Version="2.0",
    )
    issuer = etree.SubElement(a, q("saml", "Issuer"), Format=X509_SUBJECT)
    issuer.text = identity.signing_subject
    etree.SubElement(a, q("ds", "Signature"), nsmap={"ds": NS["ds"]}, Id="placeholder")
    subject = etree.SubElement(a, q("saml", "Subject"))
    name_id = etree.SubElement(
        subject, q("saml", "NameID"), Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
    )
    name_id.text = profile.subject_id
    etree.SubElement(subject, q("saml", "SubjectConfirmation"), Method="urn:oasis:names:tc:SAML:2.0:cm:sender-vouches")
    etree.SubElement(
        a,
        q("saml", "Conditions"),
        NotBefore=stamp,
        NotOnOrAfter=(moment + profile.lifetime).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    authn = etree.SubElement(a, q("saml", "AuthnStatement"), AuthnInstant=stamp)
    ctx = etree.SubElement(authn, q("saml", "AuthnContext"))
    etree.SubElement(ctx, q("saml", "AuthnContextClassRef")).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"
    st = etree.SubElement(a, q("saml", "AttributeStatement"))
    _attribute(st, "VIHF_Version", profile.vihf_version)
    _attribute(st, "Authentification_Mode", "INDIRECTE")
    _attribute(st, "Identifiant_Structure", profile.structure_id)
    _attribute(st, "Secteur_Activite", profile.sector)
    _attribute(st, "urn:oasis:names:tc:xspa:1.0:subject:subject-id", profile.subject_name)
    _attribute(
        st,
        "urn:oasis:names:tc:xacml:2.0:subject:role",
        _ce("Role", profile.role_code, profile.role_system, profile.role_display),
    )
    _attribute(st, "urn:oasis:names:tc:xacml:2.0:resource:resource-id", patient_cx)
    _attribute(st, "Ressource_URN", "urn:dmp")
    _attribute(
        st,
        "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
        _ce("PurposeOfUse", profile.purpose_code, profile.purpose_system, ""),
    )
    _attribute(st, "LPS_Nom", profile.lps_name)
    _attribute(st, "LPS_Version", profile.lps_version)
    _attribute(st, "LPS_ID_HOMOLOGATION_DMP", profile.lps_homologation)
    signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm=EXC_C14N,
    )
    signed: Any = signer.sign(
        a,
        key=identity.signing_key_pem,
        cert=identity.signing_cert_pem.decode("ascii"),
        reference_uri=f"#{assertion_id}",
        id_attribute="ID",
        always_add_key_value=False,
    )
    return signed


# -- XAdES signature of the submission set ----------------------------------------------------
def sign_submission_set(
    identity: OrgIdentity, *, submission_set_uid: str, documents: Sequence[tuple[str, bytes]]
) -> bytes:
    """The IHE DSG-style signature document: a XAdES enveloping signature over a ``ds:Manifest``
    whose references are the submission set's documents (``urn:oid:<uniqueId>`` and the SHA-256
    of their bytes), the manifest's Id carrying the submission set's uniqueId."""
    manifest = etree.Element(q("ds", "Manifest"), nsmap={"ds": NS["ds"]}, Id=f"dsg-{_id_safe(submission_set_uid)}")
    for unique_id, content in documents:
        ref = etree.SubElement(manifest, q("ds", "Reference"), URI=f"urn:oid:{unique_id}")
        etree.SubElement(ref, q("ds", "DigestMethod"), Algorithm="http://www.w3.org/2001/04/xmlenc#sha256")
        etree.SubElement(ref, q("ds", "DigestValue")).text = base64.b64encode(hashlib.sha256(content).digest()).decode()
    signer = XAdESSigner(
        method=SignatureConstructionMethod.enveloping,
        signature_algorithm="rsa-sha256",
        digest_algorithm=DigestAlgorithm.SHA256,
        # signxml's XAdES SignedProperties digest does not survive exc-c14n (verified failing with
        # signxml 5.2): inclusive C14N 1.1, which XAdES allows, for the submission-set signature
        c14n_algorithm=C14N11,
    )
    signed: Any = signer.sign(
        manifest,
        key=identity.signing_key_pem,
        cert=identity.signing_cert_pem.decode("ascii"),
        always_add_key_value=False,
    )
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


def _id_safe(oid: str) -> str:
    return oid.replace(".", "-").replace("^", "_")


def manifest_references(manifest: Any) -> Mapping[str, str]:
    """``urn:oid:<uniqueId>`` → base64 SHA-256 digest, from a verified ``ds:Manifest``."""
    out: dict[str, str] = {}
    for ref in manifest.findall("ds:Reference", NS):
        value = ref.find("ds:DigestValue", NS)
        out[ref.get("URI", "")] = (value.text or "").strip() if value is not None else ""
    return out
