"""The dmp connector against the DMP simulator over real mutual-TLS sockets: answers, errors,
replacement chains, lost responses, timeouts, certificates, VIHF and XAdES, masking."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from connectors.base import HeldVersion, PermanentError, TransientError
from connectors.dmp import DmpRefused
from connectors.dmp._xml import NS, q
from connectors.dmp.security import VihfProfile, load_identity, sign_submission_set, vihf_assertion
from connectors.sandbox.dmp import DmpSimulator, TestCa
from tests.connectors.dmp.conftest import Pki, connector_for, credentials, envelope, render

DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


def _held(rendition: Any, remote_id: str | None) -> dict[str, HeldVersion]:
    return {rendition.set_id: HeldVersion("cda", rendition.set_id, rendition.version, rendition.document_id, remote_id)}


# -- answers -------------------------------------------------------------------------------------
def test_success_stores_the_dmp_ids(sim: DmpSimulator, pki: Pki) -> None:
    rendition, facts = render()
    receipt = connector_for(sim, pki).send(envelope(pki, rendition, facts))
    stored = sim.store.entry_by_unique_id(rendition.document_id)
    assert stored is not None
    assert receipt.status == "delivered" and receipt.remote_id == stored.entry_uuid
    assert receipt.detail["uniqueId"] == rendition.document_id and receipt.detail["status"] == "Success"
    assert stored.patient_id == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    assert sim.store.content(stored.entry_uuid) == rendition.content


@pytest.mark.parametrize(
    ("status", "code"),
    [("unknown", "XDSUnknownPatientId"), ("closed", "DMP_FERME")],
)
def test_patient_without_an_open_dmp_is_permanent(sim: DmpSimulator, pki: Pki, status: str, code: str) -> None:
    rendition, facts = render()
    sim.store.set_patient("279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH", status)
    with pytest.raises(DmpRefused) as info:
        connector_for(sim, pki).send(envelope(pki, rendition, facts))
    assert info.value.code == code and code in str(info.value)


def test_refused_document_type_is_permanent(sim: DmpSimulator, pki: Pki) -> None:
    sim.control({"refuse_type": "74207-2"})
    rendition, facts = render()
    with pytest.raises(DmpRefused, match="DMP_TYPE_DOCUMENT_REFUSE: type de document 74207-2"):
        connector_for(sim, pki).send(envelope(pki, rendition, facts))


@pytest.mark.parametrize("status", [503, 500])
def test_busy_dmp_is_transient_then_delivers(sim: DmpSimulator, pki: Pki, status: int) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    sim.control({"fail_next": 1, "fail_status": status})
    with pytest.raises(TransientError, match="XDSRegistryBusy" if status == 500 else "HTTP 503"):
        conn.send(env)
    assert conn.send(env).detail["status"] == "Success"


def test_already_exists_with_the_same_unique_id_counts_as_delivered(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render()
    first = conn.send(envelope(pki, rendition, facts, key="k1"))
    second = conn.send(envelope(pki, rendition, facts, key="k2"))  # another delivery of the same document
    assert second.detail["status"] == "AlreadyPresent" and second.remote_id == first.remote_id
    assert [e.unique_id for e in sim.store.entries() if e.type_code == "74207-2"] == [rendition.document_id]


def test_same_unique_id_other_bytes_is_permanent(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render(seed=7)
    conn.send(envelope(pki, rendition, facts))
    other = replace(rendition, content=rendition.content.replace(b"Document de liaison", b"Document  de liaison", 1))
    with pytest.raises(DmpRefused, match="XDSNonIdenticalHash"):
        conn.send(envelope(pki, other, facts, key="other"))


# -- the person's choices ----------------------------------------------------------------------
def test_refusal_or_unqualified_identity_is_never_sent(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render()
    with pytest.raises(PermanentError, match="refused the DMP"):
        conn.send(envelope(pki, rendition, replace(facts, sharing_refused_with=frozenset({"dmp"}))))
    with pytest.raises(PermanentError, match="qualified"):
        conn.send(envelope(pki, rendition, replace(facts, ins_qualified=False)))
    not_qualified, nq_facts = render("not_qualified")
    with pytest.raises(PermanentError):
        conn.send(envelope(pki, not_qualified, replace(nq_facts, ins_qualified=True)))  # no INS in the CDA
    assert sim.store.entries() == [] and sim.store.answers() == []


def test_masking_and_invisibility_become_confidentiality_codes(sim: DmpSimulator, pki: Pki) -> None:
    rendition, facts = render()
    env = envelope(
        pki, rendition, facts, sharing_choices=["masked_to_professionals", "invisible_to_legal_representatives"]
    )
    connector_for(sim, pki).send(env)
    stored = sim.store.entry_by_unique_id(rendition.document_id)
    assert stored is not None
    assert stored.confidentiality == ("N", "MASQUE_PS", "INVISIBLE_REPRESENTANTS_LEGAUX")
    assert b"MASQUE_PS" not in rendition.content  # never written in the CDA


# -- replacement ------------------------------------------------------------------------------
def test_new_version_replaces_the_entry_the_dmp_acknowledged(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    v1, facts = render(seed=101)
    r1 = conn.send(envelope(pki, v1, facts))
    v2, _ = render(seed=102, previous=v1)
    assert v2.set_id == v1.set_id and v2.version == 2
    r2 = conn.send(envelope(pki, v2, facts, held=_held(v1, r1.remote_id)))
    assert r2.detail["replaced"] == [r1.remote_id]
    old, new = sim.store.entry(str(r1.remote_id)), sim.store.entry(str(r2.remote_id))
    assert old is not None and new is not None
    assert old.status == DEPRECATED and new.status == APPROVED and new.replaces == old.entry_uuid


def test_held_without_remote_id_is_found_by_iti18(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    v1, facts = render(seed=111)
    r1 = conn.send(envelope(pki, v1, facts))
    v2, _ = render(seed=112, previous=v1)
    r2 = conn.send(envelope(pki, v2, facts, held=_held(v1, None)))
    assert r2.detail["replaced"] == [r1.remote_id]
    assert any(a["action"].endswith("RegistryStoredQuery") for a in sim.store.answers())


def test_never_replaces_a_version_the_dmp_did_not_receive(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    v1, facts = render(seed=121)  # produced, but never reached this DMP
    v2, _ = render(seed=122, previous=v1)
    receipt = conn.send(envelope(pki, v2, facts))
    assert receipt.detail["replaced"] == []
    stored = sim.store.entry(str(receipt.remote_id))
    assert stored is not None and stored.replaces is None


def test_simulator_refuses_rplc_to_an_unknown_entry(sim: DmpSimulator, pki: Pki) -> None:
    v1, facts = render(seed=131)
    v2, _ = render(seed=132, previous=v1)
    with pytest.raises(DmpRefused) as info:
        connector_for(sim, pki).send(
            envelope(pki, v2, facts, held=_held(v1, "urn:uuid:00000000-0000-4000-8000-000000000000"))
        )
    assert info.value.code == "UnresolvedReferenceException"
    assert sim.store.entry_by_unique_id(v2.document_id) is None


def test_lost_response_then_resend_is_recognised(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render(seed=141)
    env = envelope(pki, rendition, facts)
    sim.control({"drop_next": 1})  # the DMP stores, then the answer is lost
    with pytest.raises(TransientError) as info:
        conn.send(env)
    assert info.value.__cause__ is not None
    receipt = conn.send(env)
    assert receipt.detail["status"] == "AlreadyPresent"
    assert [e.unique_id for e in sim.store.entries() if e.type_code == "74207-2"] == [rendition.document_id]


def test_out_of_order_receipts_keep_one_approved_version(sim: DmpSimulator, pki: Pki) -> None:
    """v1 reaches the DMP but its answer is lost; v2 goes before v1's receipt is known (nothing
    held): it finds v1 by ITI-18 and replaces it; v1's retry is then recognised as delivered."""
    conn = connector_for(sim, pki)
    v1, facts = render(seed=151)
    v2, _ = render(seed=152, previous=v1)
    env1 = envelope(pki, v1, facts)
    sim.control({"drop_next": 1})
    with pytest.raises(TransientError):
        conn.send(env1)
    r2 = conn.send(envelope(pki, v2, facts))
    r1 = conn.send(env1)
    assert r1.detail["status"] == "AlreadyPresent" and r2.detail["replaced"] == [r1.remote_id]
    cdas = [e for e in sim.store.entries() if e.type_code == "74207-2"]
    assert [(e.unique_id, e.status) for e in cdas] == [(v1.document_id, DEPRECATED), (v2.document_id, APPROVED)]


def test_older_version_than_the_held_one_is_refused(sim: DmpSimulator, pki: Pki) -> None:
    v1, facts = render(seed=161)
    v2, _ = render(seed=162, previous=v1)
    held = {v1.set_id: HeldVersion("cda", v1.set_id, 2, v2.document_id, "urn:uuid:x")}
    with pytest.raises(PermanentError, match="older"):
        connector_for(sim, pki).send(envelope(pki, v1, facts, held=held))


def test_timeout_during_the_soap_call_is_transient_and_the_resend_recognised(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki, timeout=0.5)
    rendition, facts = render(seed=171)
    env = envelope(pki, rendition, facts)
    sim.control({"delay_after_store": 1.5})
    with pytest.raises(TransientError, match="no answer within"):
        conn.send(env)
    sim.control({"delay_after_store": 0})
    receipt = conn.send(env)
    assert receipt.detail["status"] == "AlreadyPresent"


def test_the_deadline_cuts_the_timeout(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki, timeout=30)
    rendition, facts = render(seed=181)
    sim.control({"delay_after_store": 1.5})
    env = envelope(pki, rendition, facts, deadline=datetime.now(UTC) + timedelta(seconds=0.6))
    with pytest.raises(TransientError):
        conn.send(env)


# -- certificates ----------------------------------------------------------------------------
def test_missing_credentials_are_permanent(sim: DmpSimulator, pki: Pki) -> None:
    rendition, facts = render()
    env = replace(envelope(pki, rendition, facts), credentials=None)
    with pytest.raises(PermanentError, match="no DMP credentials"):
        connector_for(sim, pki).send(env)
    no_key = replace(credentials(pki.client), private_key_pem=None)
    with pytest.raises(PermanentError, match="lack the organisation certificate or its key"):
        connector_for(sim, pki).send(replace(env, credentials=no_key))


def test_expired_certificate_is_permanent_with_an_operator_message(sim: DmpSimulator, pki: Pki) -> None:
    now = datetime.now(UTC)
    expired = pki.ca.organisation_cert(
        "750803447", not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)
    )
    rendition, facts = render()
    with pytest.raises(PermanentError, match=r"expired on .*renew it \(IGC-Santé\)"):
        connector_for(sim, pki).send(envelope(pki, rendition, facts, cert=expired))
    assert sim.store.answers() == []


def test_expired_certificate_is_refused_by_the_dmp_too(sim: DmpSimulator, pki: Pki) -> None:
    """Even past the connector's own check (clock skew), the DMP's TLS refuses it: permanent."""
    now = datetime.now(UTC)
    expired = pki.ca.organisation_cert(
        "750803447", not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)
    )
    identity = load_identity(credentials(expired), now=now - timedelta(days=2))
    conn = connector_for(sim, pki)
    rendition, facts = render()
    env = envelope(pki, rendition, facts, cert=expired)
    with pytest.raises(PermanentError, match="refused the ESSMS's certificate") as info:
        conn._post(env, identity, sim.iti41_url, b"<x/>", "application/soap+xml", what="ITI-41 submission")
    assert "certificate" in str(info.value)


def test_unknown_ca_is_permanent_with_an_operator_message(sim: DmpSimulator, pki: Pki) -> None:
    stranger = TestCa("Some other CA").organisation_cert("750803447")
    rendition, facts = render()
    with pytest.raises(PermanentError, match="refused the ESSMS's certificate") as info:
        connector_for(sim, pki).send(envelope(pki, rendition, facts, cert=stranger))
    assert "IGC-Santé" in str(info.value)
    assert sim.store.entries() == []


def test_untrusted_dmp_server_certificate_is_permanent(sim: DmpSimulator, pki: Pki, tmp_path: Any) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(TestCa("Not the DMP's CA").cert_pem)
    rendition, facts = render()
    with pytest.raises(PermanentError, match="must chain to ca_bundle"):
        connector_for(sim, pki, ca_bundle=other).send(envelope(pki, rendition, facts))


# -- VIHF and XAdES ----------------------------------------------------------------------------
def _profile(**changes: Any) -> VihfProfile:
    base = VihfProfile(
        subject_id="801234567897",
        subject_name="BOILEAU Charles",
        structure_id="1750803447",
        sector="SA17^1.2.250.1.71.4.2.4",
        role_code="10",
        role_system="1.2.250.1.71.1.2.7",
        role_display="Médecin",
        lps_name="dui-gateway",
        lps_version="0.1.0",
        lps_homologation="TEST-0001",
    )
    return replace(base, **changes)


def _send_with_vihf(sim: DmpSimulator, pki: Pki, make: Any) -> Any:
    conn = connector_for(sim, pki)
    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    submission = conn.prepare(env)
    identity = load_identity(env.credentials)
    patient = submission.described.entries[0].patient_id
    submission.security = [make(identity, patient)]
    return conn.submit(env, submission)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda i, p: vihf_assertion(i, _profile(sector="XX99"), patient_cx=p), "Secteur_Activite"),
        (lambda i, p: vihf_assertion(i, _profile(lps_homologation=" "), patient_cx=p), "LPS_ID_HOMOLOGATION_DMP"),
        (lambda i, p: vihf_assertion(i, _profile(structure_id="1999999999"), patient_cx=p), "FailedAuthentication"),
        (
            lambda i, p: vihf_assertion(i, _profile(), patient_cx=p, now=datetime.now(UTC) - timedelta(hours=1)),
            "MessageExpired",
        ),
        (
            lambda i, p: vihf_assertion(i, _profile(), patient_cx="190000000000000^^^&1.2.250.1.213.1.4.10&ISO^NH"),
            "resource-id",
        ),
    ],
    ids=["sector", "homologation", "structure-vs-certificate", "expired", "other-patient"],
)
def test_vihf_attributes_and_validity_are_checked(sim: DmpSimulator, pki: Pki, make: Any, expected: str) -> None:
    with pytest.raises(DmpRefused, match=expected):
        _send_with_vihf(sim, pki, make)
    assert [e for e in sim.store.entries()] == []


def test_tampered_vihf_signature_is_refused(sim: DmpSimulator, pki: Pki) -> None:
    def tampered(identity: Any, patient: str) -> Any:
        a = vihf_assertion(identity, _profile(), patient_cx=patient)
        name_id = a.find("saml:Subject/saml:NameID", NS)
        name_id.text = "899999999999"  # after signing
        return a

    with pytest.raises(DmpRefused) as info:
        _send_with_vihf(sim, pki, tampered)
    assert info.value.code == "wsse:FailedCheck" and "signature du VIHF invalide" in str(info.value)


def test_vihf_signed_by_an_unknown_ca_is_refused(sim: DmpSimulator, pki: Pki) -> None:
    stranger = TestCa("Rogue").organisation_cert("750803447")

    def rogue(identity: Any, patient: str) -> Any:
        return vihf_assertion(load_identity(credentials(stranger)), _profile(), patient_cx=patient)

    with pytest.raises(DmpRefused, match="FailedCheck"):
        _send_with_vihf(sim, pki, rogue)


def test_xades_not_matching_the_documents_is_refused(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    submission = conn.prepare(env)
    identity = load_identity(env.credentials)
    forged = sign_submission_set(identity, submission_set_uid="2.25.1", documents=[(rendition.document_id, b"other")])
    cid, media, _ = submission.attachments[-1]
    submission.attachments[-1] = (cid, media, forged)
    sig_eo = submission.request.findall("lcm:SubmitObjectsRequest/rim:RegistryObjectList/rim:ExtrinsicObject", NS)[-1]
    for slot in sig_eo.findall("rim:Slot", NS):  # keep hash/size coherent: only the signature is wrong
        if slot.get("name") == "hash":
            import hashlib

            slot.find("rim:ValueList/rim:Value", NS).text = hashlib.sha1(forged).hexdigest()
        if slot.get("name") == "size":
            slot.find("rim:ValueList/rim:Value", NS).text = str(len(forged))
    with pytest.raises(DmpRefused, match="manifest does not match"):
        conn.submit(env, submission)


def test_missing_vihf_is_refused(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    submission = conn.prepare(env)
    submission.security = [etree.Element(q("wsu", "Timestamp"))]
    with pytest.raises(DmpRefused, match="VIHF absent"):
        conn.submit(env, submission)


# -- PPA ---------------------------------------------------------------------------------------
def test_ppa_goes_through_the_same_connector_with_its_type_code(sim: DmpSimulator, pki: Pki) -> None:
    import json
    import uuid
    from pathlib import Path

    from mappings.base import RenderContext
    from mappings.ppa import PPA, PpaRecord

    raw = json.loads((Path(__file__).resolve().parents[2] / "resources/records/ppa-ehpad.json").read_text("utf-8"))
    record = PpaRecord.model_validate(raw)
    ctx = RenderContext(now=datetime(2025, 3, 1, 9, 30, tzinfo=UTC), submission_id=uuid.uuid4())
    cda = next(r for r in PPA.render(record, ctx) if r.kind == "cda")
    facts = PPA.facts(record)
    if not facts.ins_qualified:
        pytest.skip("the PPA sample has no qualified INS")
    env = replace(envelope(pki, cda, facts), document_type="ppa")
    receipt = connector_for(sim, pki).send(env)
    stored = sim.store.entry(str(receipt.remote_id))
    assert stored is not None
    assert (stored.type_code, stored.format_code) == ("80788-3", "urn:ihe:iti:xds-sd:pdf:2008")


def test_one_connector_shared_by_worker_threads(sim: DmpSimulator, pki: Pki) -> None:
    from concurrent.futures import ThreadPoolExecutor

    conn = connector_for(sim, pki)
    docs = [render(seed=300 + i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        receipts = list(pool.map(lambda d: conn.send(envelope(pki, d[0], d[1])), docs))
    assert {r.detail["status"] for r in receipts} == {"Success"}
    assert len({r.remote_id for r in receipts}) == 6
    assert len(conn._sessions) <= 3
    conn.close()


def test_operator_messages_never_carry_the_ins(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki)
    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    submission = conn.prepare(env)
    package = submission.request.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList/rim:RegistryPackage", NS)
    for ei in package.findall("rim:ExternalIdentifier", NS):
        if ei.get("value", "").endswith("^NH"):
            ei.set("value", "279035121518989^^^&1.2.250.1.213.1.4.8&ISO^NH")  # production OID: mismatch
    with pytest.raises(DmpRefused) as info:
        conn.submit(env, submission)
    assert "279035121518989" not in str(info.value)


def test_chain_skipping_a_version_the_dmp_never_got(sim: DmpSimulator, pki: Pki) -> None:
    """v1 delivered, v2 dead-lettered before reaching the DMP, v3 replaces what the DMP holds: v1."""
    conn = connector_for(sim, pki)
    v1, facts = render(seed=401)
    r1 = conn.send(envelope(pki, v1, facts))
    v2, _ = render(seed=402, previous=v1)
    v3, _ = render(seed=403, previous=v2)
    assert (v3.version, v3.replaces) == (3, v2.document_id)
    r3 = conn.send(envelope(pki, v3, facts, held=_held(v1, r1.remote_id)))
    assert r3.detail["replaced"] == [r1.remote_id]
    chain = [(e.unique_id, e.status, e.replaces) for e in sim.store.entries() if e.type_code == "74207-2"]
    assert chain == [(v1.document_id, DEPRECATED, None), (v3.document_id, APPROVED, r1.remote_id)]
    assert sim.store.entry_by_unique_id(v2.document_id) is None
