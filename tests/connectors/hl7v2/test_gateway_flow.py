# ruff: noqa: F811 - the gateway test fixtures are imported by name and used as parameters
"""The issue's inbound path with the real gateway pieces: a hospital sends PAM-FR ADT over a real
MLLP socket, the listener stores it (DatabaseSink) before AA, a worker interprets it, the person
is matched through the identifier index (the INS of a DLU the gateway routed), the event reaches
the DUI vendor's webhook, a ZFA opposition to DMP feeding keeps the next DLU away from the DMP,
and an unknown person is kept for an operator to link."""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors.hl7v2 import MllpSource, MllpSourceSettings
from connectors.hl7v2.mllp import frame, read_frame
from connectors.sandbox import SandboxReceiver
from connectors.webhook import WebhookConnector, WebhookSettings
from gateway import inbound, persons, pipeline
from gateway.delivery import deliver_next
from gateway.routing import ConfiguredSource, RoutingTable, parse_config
from gateway.security.clients import add_essms
from gateway.storage.db import session_scope
from gateway.storage.models import AuditEvent, SharingChoice, Submission
from tests.connectors.hl7v2.support import adt, msa
from tests.gateway.api.conftest import app, client, live_server, runtime  # noqa: F401 - fixtures
from tests.gateway.api.support import post_note
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    _pg_schemas,
    _sqlite_template,
    db_url,
    keyring,
    master_keys_spec,
    pg_url_test,
    session_factory,
    sqlite_url,
    tenant,
)

DEMO = Path(__file__).resolve().parents[3] / "gateway" / "demo_data" / "01-dlu-qualified-ins.json"
DEMO_INS = "238037505612378"  # the demo record's test INS (NIR, OID 1.2.250.1.213.1.4.10)


@pytest.fixture
def dui() -> Iterator[SandboxReceiver]:
    with SandboxReceiver() as receiver:
        yield receiver


@pytest.fixture
def wired(runtime: Any, tenant: Any, dui: SandboxReceiver) -> Iterator[Any]:
    record = json.loads(DEMO.read_text(encoding="utf-8"))
    with session_scope(runtime.session_factory) as session:
        add_essms(session, tenant_id=tenant.id, finess=record["essms"]["finess"], name="EHPAD démo", category="500")
    source = MllpSource(MllpSourceSettings(essms_finess=record["essms"]["finess"], port=0))
    runtime.sources = {"hospital-adt": ConfiguredSource("hospital-adt", source, tenant.code, None)}
    runtime.destinations = {
        "dui": WebhookConnector(WebhookSettings(url=f"{dui.url}/events", signing=False)),
        "dmp": WebhookConnector(WebhookSettings(url=f"{dui.url}/dmp", signing=False)),
    }
    runtime.routing = RoutingTable(
        config=parse_config(
            {
                "destinations": {
                    "dui": {"connector": "webhook", "category": "webhook"},
                    "dmp": {"connector": "webhook", "category": "dmp"},
                },
                "rules": [
                    {"document_types": ["inbound-event"], "destinations": ["dui"]},
                    {"document_types": ["dlu"], "destinations": ["dmp"]},
                ],
            }
        )
    )
    runtime._bulkheads = None
    stop = threading.Event()
    sink = inbound.DatabaseSink(runtime, runtime.sources["hospital-adt"])
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    runtime.mllp_port = source.address[1]
    runtime.demo_record = record
    yield runtime
    stop.set()
    thread.join(5)


def _send(runtime: Any, raw: bytes) -> list[str]:
    import socket

    with socket.create_connection(("127.0.0.1", runtime.mllp_port), timeout=10) as sock:
        sock.sendall(frame(raw))
        return msa(read_frame(sock))


def _drain(runtime: Any) -> None:
    for _ in range(30):
        busy = inbound.process_next_inbound(runtime, worker_id="w-in")
        busy = pipeline.process_next(runtime, worker_id="w-pipe") or busy
        busy = (deliver_next(runtime, worker_id="w-out") is not None) or busy
        if not busy:
            return


def _events(dui: SandboxReceiver) -> list[dict[str, Any]]:
    out = []
    for item in dui.store.received(accepted_only=True):
        if item["path"] != "/events":
            continue
        found = dui.store.body(item["n"])
        assert found is not None
        body = json.loads(found[0])
        out.append(json.loads(base64.b64decode(body["renditions"][0]["content_base64"])))
    return out


def _dmp_count(dui: SandboxReceiver) -> int:
    return sum(1 for item in dui.store.received(accepted_only=True) if item["path"] == "/dmp")


def _post_dlu(client: Any, tenant: Any, record: dict[str, Any]) -> str:
    response = post_note(client, tenant.api_key, {"document_type": "dlu", "record": record})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_zfa_opposition_for_a_matched_resident_keeps_the_next_dlu_from_the_dmp(
    wired: Any, tenant: Any, dui: SandboxReceiver, client: Any
) -> None:
    record = wired.demo_record
    _post_dlu(client, tenant, record)
    _drain(wired)
    assert _dmp_count(dui) == 1  # before: the DLU goes to the DMP, and its qualified INS is indexed

    ack = _send(wired, adt("A01", control_id="ADM-1", ins=DEMO_INS, zfa_feeding="IO"))
    assert ack[:2] == ["AA", "ADM-1"]
    _drain(wired)

    (event,) = _events(dui)
    assert event["event_type"] == "adt.hospitalised"
    assert event["person_ref"] == record["person"]["local_id"]  # matched on the INS
    assert event["payload"]["dmp"]["feeding"] == "opposed"
    with wired.session_factory() as session:
        choice = session.scalars(select(SharingChoice)).one()
        assert (choice.person_ref, choice.family, choice.refused) == (record["person"]["local_id"], "dmp", True)
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "sharing_choice_changed")).one()
        assert audited.detail is not None and audited.detail["consent"] == "dmp"

    again = copy.deepcopy(record)
    again["last_updated"] = "2026-12-01T10:00:00+01:00"
    sid = _post_dlu(client, tenant, again)
    _drain(wired)
    assert _dmp_count(dui) == 1  # the second DLU did not go to the DMP
    with wired.session_factory() as session:
        sub = session.get(Submission, sid)
        assert sub is not None and sub.report is not None
        refused = sub.report["routing"]["refused"]
        assert [(r["destination"], r["reason"]) for r in refused] == [("dmp", "sharing_refused")]

    # a later non-opposition lifts it: the next DLU goes to the DMP again
    assert _send(wired, adt("A08", control_id="UPD-1", ins=DEMO_INS, zfa_feeding="INO"))[0] == "AA"
    _drain(wired)
    third = copy.deepcopy(record)
    third["last_updated"] = "2026-12-02T10:00:00+01:00"
    _post_dlu(client, tenant, third)
    _drain(wired)
    assert _dmp_count(dui) == 2


def test_an_unknown_person_is_delivered_kept_and_linked_by_an_operator(
    wired: Any, tenant: Any, dui: SandboxReceiver
) -> None:
    assert _send(wired, adt("A01", control_id="U-1", ins=None, ipp="IPP-77", movement="MV-1"))[0] == "AA"
    _drain(wired)
    (first,) = _events(dui)
    assert first["person_ref"] is None  # delivered all the same
    with wired.session_factory() as session:
        (kept,) = persons.list_unmatched(session, wired.keyring)
    assert kept.identifiers == ("urn:oid:1.2.250.1.999.1|IPP-77",)
    assert kept.event_type == "adt.hospitalised"

    with session_scope(wired.session_factory) as session:
        assert (
            persons.link(session, wired.keyring, unmatched_id=kept.id, person_ref="RES-77", actor="operator:test") == 1
        )
    with wired.session_factory() as session:
        assert persons.list_unmatched(session, wired.keyring) == []

    # the cancellation of that admission now matches, in the same series as the admission
    assert _send(wired, adt("A11", control_id="U-2", ins=None, ipp="IPP-77", movement="MV-1"))[0] == "AA"
    _drain(wired)
    second = _events(dui)[1]
    assert second["event_type"] == "adt.cancelled"
    assert second["person_ref"] == "RES-77"
    assert second["payload"]["cancels"]["trigger"] == "A01"
    assert second["series"] == first["series"]


def test_a_merge_carries_the_old_identifier_over(wired: Any, tenant: Any, dui: SandboxReceiver) -> None:
    with session_scope(wired.session_factory) as session:
        persons.remember(
            session,
            tenant_id=tenant.id,
            essms_finess=wired.demo_record["essms"]["finess"],
            person_ref="RES-9",
            identifiers=["urn:oid:1.2.250.1.999.1|OLD-1"],
            origin="operator",
        )
    # A40: PID-3 is the surviving IPP, MRG-1 the merged one the gateway knows
    assert _send(wired, adt("A40", control_id="M-1", ins=None, ipp="NEW-1", merged_ipp="OLD-1"))[0] == "AA"
    _drain(wired)
    (event,) = _events(dui)
    assert (event["event_type"], event["person_ref"]) == ("adt.merged", "RES-9")
    with wired.session_factory() as session:
        assert persons.match(session, tenant.id, ["urn:oid:1.2.250.1.999.1|NEW-1"]) == "RES-9"
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "identity_merged")).first() is not None


def test_a_dlu_sent_in_an_mdm_is_delivered_when_the_application_ack_comes_back(
    wired: Any, tenant: Any, client: Any
) -> None:
    import time

    from connectors.hl7v2.connector import MllpConnector, MllpConnectorSettings
    from connectors.sandbox.mllp import MllpPeer
    from gateway.storage.models import Delivery

    with MllpPeer(ack_to=("127.0.0.1", wired.mllp_port)) as pfi:
        host, port = pfi.address
        wired.destinations["pfi"] = MllpConnector(
            MllpConnectorSettings(host=host, port=port, timeout=5, ack_mode="enhanced")
        )
        wired.routing = RoutingTable(
            config=parse_config(
                {
                    "destinations": {"pfi": {"connector": "mllp", "category": "dmp"}},
                    "rules": [{"document_types": ["dlu"], "destinations": ["pfi"]}],
                }
            )
        )
        wired._bulkheads = None
        pfi.answer_next("CA")  # accepted now, application ACK later (to the gateway's mllp source)
        _post_dlu(client, tenant, wired.demo_record)
        _drain(wired)
        with wired.session_factory() as session:
            (delivery,) = session.scalars(select(Delivery)).all()
            assert delivery.status == "sent" and delivery.ack_ref
        (received,) = pfi.received.values()
        assert received.message_type == "MDM^T02^MDM_T02"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _drain(wired)
            with wired.session_factory() as session:
                delivery = session.scalars(select(Delivery)).one()
            if delivery.status == "delivered":
                break
            time.sleep(0.1)
        assert delivery.status == "delivered"


def test_a_matched_residents_hospitalisation_feeds_the_stay_events(
    wired: Any, tenant: Any, dui: SandboxReceiver, client: Any
) -> None:
    """The worker that interprets the ADT also records the indicators' stay event (absence start on
    A01, end on A03) for a matched resident; an unmatched person's movement records nothing."""
    from gateway.storage.models import StayEventRow

    record = wired.demo_record
    _post_dlu(client, tenant, record)
    _drain(wired)
    assert _send(wired, adt("A01", control_id="HOSP-1", ins=DEMO_INS, movement="MVT-7"))[0] == "AA"
    assert (
        _send(wired, adt("A01", control_id="HOSP-X", ins="199999999999999", ipp="777001", movement="MVT-8"))[0] == "AA"
    )
    _drain(wired)
    with wired.session_factory() as session:
        rows = session.scalars(select(StayEventRow)).all()
        assert [(r.kind, r.person_ref, r.source) for r in rows] == [
            ("absence_start", record["person"]["local_id"], "hospital-adt")
        ]
    assert _send(wired, adt("A03", control_id="HOSP-2", ins=DEMO_INS, movement="MVT-9"))[0] == "AA"
    _drain(wired)
    with wired.session_factory() as session:
        kinds = sorted(r.kind for r in session.scalars(select(StayEventRow)))
        assert kinds == ["absence_end", "absence_start"]
    assert [e["event_type"] for e in _events(dui)] == ["adt.hospitalised", "adt.hospitalised", "adt.discharged"]
