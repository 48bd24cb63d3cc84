"""Fixtures for the SI-SdO tests: a running simulator with two ESSMS, envelopes of SDO answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from connectors.base import Credentials, Envelope, HeldVersion
from connectors.sandbox.sdo import EnrolledEssms, SdoSandbox, start_sdo_sandbox
from mappings.base import PreviousVersion, RecordFacts, RenderContext, Rendition
from mappings.sdo import SDO_CONSENT, SDO_STATUS, SdoConsentRecord, SdoStatusRecord

ESSMS_A = "759900004"
ESSMS_B = "759900005"


@pytest.fixture
def sandbox() -> Iterator[SdoSandbox]:
    box = start_sdo_sandbox([ESSMS_A, ESSMS_B])
    try:
        yield box
    finally:
        box.stop()


def credentials(essms: EnrolledEssms, *, tenant: str = "demo") -> Credentials:
    return Credentials(
        tenant=tenant,
        essms_finess=essms.finess,
        purpose="sdo",
        certificate_pem=essms.certificate.certificate_pem,
        private_key_pem=essms.certificate.private_key_pem,
        username=essms.client_id,
        password=essms.client_secret,
    )


def _envelope(
    document_type: str,
    renditions: tuple[Rendition, ...],
    creds: Credentials | None,
    held: dict[str, HeldVersion] | None = None,
) -> Envelope:
    sub = uuid.uuid4()
    return Envelope(
        delivery_id=str(uuid.uuid4()),
        submission_id=str(sub),
        idempotency_key=f"delivery-{uuid.uuid4()}",
        tenant="demo",
        destination="viatrajectoire",
        document_type=document_type,
        renditions=renditions,
        facts=RecordFacts(person_ref="P-1", essms_finess=creds.essms_finess if creds else ESSMS_A),
        held=held or {},
        credentials=creds,
    )


def consent_envelope(decision: dict[str, str], creds: Credentials | None, finess: str = ESSMS_A) -> Envelope:
    record = SdoConsentRecord(
        essms_finess=finess,
        person_ref="P-1",
        decision={"id_decision": decision["idDecision"], "id_nat_decision": decision["idNat_Decision"]},
        collected_on=date(2026, 11, 2),
    )
    ctx = RenderContext(now=datetime.now(UTC), submission_id=uuid.uuid4())
    return _envelope("sdo-consent", tuple(SDO_CONSENT.render(record, ctx)), creds)


def status_envelope(
    decision: dict[str, str],
    creds: Credentials | None,
    *,
    statut: str = "42",
    motif: str | None = None,
    finess: str = ESSMS_A,
    previous: PreviousVersion | None = None,
    held_remote_id: str | None = None,
) -> Envelope:
    record = SdoStatusRecord(
        essms_finess=finess,
        person_ref="P-1",
        decision={"id_decision": decision["idDecision"], "id_nat_decision": decision["idNat_Decision"]},
        essms_name="IME Les Tilleuls",
        statut_esms=statut,
        motif_esms=motif,
        date_statut=date(2026, 11, 3),
    )
    series = {previous.set_id: previous} if previous else {}
    ctx = RenderContext(now=datetime.now(UTC), submission_id=uuid.uuid4(), series=series)
    renditions = tuple(SDO_STATUS.render(record, ctx))
    held: dict[str, HeldVersion] = {}
    if held_remote_id is not None:
        r = renditions[0]
        held = {
            r.set_id: HeldVersion(
                kind=r.kind, set_id=r.set_id, version=r.version - 1, document_id="x", remote_id=held_remote_id
            )
        }
    return _envelope("sdo-status", renditions, creds, held)
