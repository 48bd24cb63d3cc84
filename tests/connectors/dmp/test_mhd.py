"""The PDSm / MHD ITI-65 route, selected by settings, against the simulator's FHIR endpoint."""

from __future__ import annotations

import json

import pytest
import requests

from connectors.base import HeldVersion
from connectors.dmp import DmpRefused
from connectors.dmp.metadata import document_entry, visibility_codes
from connectors.dmp.mhd import provide_bundle
from connectors.sandbox.dmp import DmpSimulator
from connectors.sandbox.dmp.mhd import DOCREF_RULES
from tests.connectors.dmp.conftest import Pki, connector_for, envelope, render

DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"


def test_mhd_route_delivers_replaces_and_recognises_a_resend(sim: DmpSimulator, pki: Pki) -> None:
    conn = connector_for(sim, pki, route="mhd")
    v1, facts = render(seed=201)
    env1 = envelope(pki, v1, facts)
    r1 = conn.send(env1)
    assert r1.detail["route"] == "mhd" and r1.remote_id
    assert conn.send(env1).remote_id == r1.remote_id  # 409 duplicate → delivered, same id
    v2, _ = render(seed=202, previous=v1)
    held = {v1.set_id: HeldVersion("cda", v1.set_id, 1, v1.document_id, r1.remote_id)}
    r2 = conn.send(envelope(pki, v2, facts, held=held))
    old = sim.store.entry(f"urn:uuid:{r1.remote_id}")
    new = sim.store.entry(f"urn:uuid:{r2.remote_id}")
    assert old is not None and new is not None
    assert old.status == DEPRECATED and new.replaces == old.entry_uuid and new.route == "mhd"


def test_mhd_replacement_of_an_unknown_document_is_refused(sim: DmpSimulator, pki: Pki) -> None:
    v1, facts = render(seed=211)
    v2, _ = render(seed=212, previous=v1)
    held = {v1.set_id: HeldVersion("cda", v1.set_id, 1, v1.document_id, "00000000-0000-4000-8000-000000000000")}
    with pytest.raises(DmpRefused, match="unknown DocumentReference"):
        connector_for(sim, pki, route="mhd").send(envelope(pki, v2, facts, held=held))


@pytest.mark.parametrize(("path", "what"), DOCREF_RULES[:9], ids=[p for p, _ in DOCREF_RULES[:9]])
def test_each_required_pdsm_element_is_checked(sim: DmpSimulator, pki: Pki, path: str, what: str) -> None:
    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    assert rendition.metadata is not None
    entry = document_entry(
        rendition.content,
        rendition.metadata,
        document_id=rendition.document_id,
        entry_id="urn:uuid:1",
        document_ref="d",
    )
    bundle = provide_bundle(env, [entry], [rendition], {}, "1.2.250.1.999.1.1")
    doc = bundle["entry"][1]["resource"]
    head, _, last = path.rpartition(".")
    target = doc
    for part in head.split(".") if head else []:
        target = target[part][0] if isinstance(target[part], list) else target[part]
    del target[last]
    cert, key = pki.client.write(pki.folder, "mhd-client")
    resp = requests.post(
        sim.fhir_url,
        data=json.dumps(bundle),
        headers={"Content-Type": "application/fhir+json"},
        cert=(str(cert), str(key)),
        verify=str(pki.ca_path),
        timeout=30,
    )
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["diagnostics"].startswith(f"DocumentReference.{path}")


def test_the_iti65_bundle_passes_the_projects_pdsm_checks(pki: Pki) -> None:
    from profiles._validator import check_rendition

    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    assert rendition.metadata is not None
    entry = document_entry(
        rendition.content,
        rendition.metadata,
        document_id=rendition.document_id,
        entry_id="urn:uuid:6b3c3ad5-6a26-4a6e-9a1e-5d4d9c2b2f10",
        document_ref="d",
        visibility=visibility_codes(["invisible_to_person"]),
    )
    bundle = provide_bundle(env, [entry], [rendition], {}, "1.2.250.1.999.1.1")
    report = check_rendition(json.dumps(bundle).encode(), "fhir:pdsm")
    # zero errors, zero warnings (no unchecked binding, no documented relaxation needed)
    assert [(i.severity, i.expression, i.message) for i in report.issues if i.severity != "information"] == []
    assert "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.ProvideBundle" in report.profiles
    labels = [c["coding"][0]["code"] for c in bundle["entry"][1]["resource"]["securityLabel"]]
    assert labels == ["N", "INVISIBLE_PATIENT"]
