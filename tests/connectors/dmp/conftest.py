"""A dev PKI, a running DMP simulator and envelopes built with the real mappings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Credentials, Envelope, HeldVersion
from connectors.dmp import DmpConnector, DmpSettings
from connectors.sandbox.dmp import DmpSimulator, TestCa
from connectors.sandbox.dmp.pki import IssuedCert
from mappings.base import PreviousVersion, RenderContext, Rendition
from mappings.dlu import DLU
from tests.mappings.conftest import load_record

FINESS = "750803447"  # the 'rich' sample's ESSMS (idNatStruct 1750803447)


@dataclass
class Pki:
    folder: Path
    ca: TestCa
    ca_path: Path
    server_cert: Path
    server_key: Path
    client: IssuedCert


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("dmp-pki")
    ca = TestCa()
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.cert_pem)
    server_cert, server_key = ca.server_cert().write(folder, "server")
    return Pki(folder, ca, ca_path, server_cert, server_key, ca.organisation_cert(FINESS))


@pytest.fixture
def sim(pki: Pki, tmp_path: Path) -> Iterator[DmpSimulator]:
    simulator = DmpSimulator(
        ca=pki.ca_path, cert=pki.server_cert, key=pki.server_key, db_path=tmp_path / "dmp.db"
    ).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def settings_for(sim: DmpSimulator, pki: Pki, **overrides: Any) -> DmpSettings:
    values: dict[str, Any] = {
        "iti41_url": sim.iti41_url,
        "iti18_url": sim.iti18_url,
        "mhd_url": sim.fhir_url,
        "ca_bundle": pki.ca_path,
        "timeout": 10.0,
        "lps_homologation": "TEST-0001",
        **overrides,
    }
    return DmpSettings(**values)


def connector_for(sim: DmpSimulator, pki: Pki, **overrides: Any) -> DmpConnector:
    return DmpConnector(settings_for(sim, pki, **overrides))


def credentials(cert: IssuedCert, **attributes: str) -> Credentials:
    attrs = {
        "vihf_subject_id": "801234567897",
        "vihf_subject_name": "BOILEAU Charles",
        "vihf_role_code": "10",
        "vihf_role_system": "1.2.250.1.71.1.2.7",
        "vihf_role_display": "Médecin",
        **attributes,
    }
    return Credentials(
        tenant="t1",
        essms_finess=FINESS,
        purpose="dmp",
        certificate_pem=cert.cert_pem,
        private_key_pem=cert.key_pem,
        attributes=attrs,
    )


def render(
    name: str = "rich", *, seed: int | None = None, previous: Rendition | None = None, record: Any = None
) -> tuple[Rendition, Any]:
    rec = record if record is not None else load_record(name)
    prev = {}
    if previous is not None:
        prev = {"cda": PreviousVersion(previous.set_id, previous.version, previous.document_id)}
    ctx = RenderContext(
        now=datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
        submission_id=uuid.UUID(int=seed if seed is not None else uuid.uuid4().int >> 64),
        previous=prev,
    )
    cda = next(r for r in DLU.render(rec, ctx) if r.kind == "cda")
    return cda, DLU.facts(rec)


def envelope(
    pki: Pki,
    rendition: Rendition,
    facts: Any,
    *,
    held: dict[str, HeldVersion] | None = None,
    cert: IssuedCert | None = None,
    key: str | None = None,
    deadline: datetime | None = None,
    creds: Credentials | None = None,
    **fact_extra: Any,
) -> Envelope:
    if fact_extra:
        facts = replace(facts, extra={**facts.extra, **fact_extra})
    return Envelope(
        delivery_id=str(uuid.uuid4()),
        submission_id=str(uuid.uuid4()),
        idempotency_key=key or f"delivery-{rendition.document_id}",
        tenant="t1",
        destination="dmp",
        document_type="dlu",
        renditions=(rendition,),
        facts=facts,
        held=held or {},
        credentials=creds or credentials(cert or pki.client),
        deadline=deadline or datetime.now(UTC) + timedelta(minutes=5),
    )
