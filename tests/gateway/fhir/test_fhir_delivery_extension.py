"""The FHIR facade shows where each document went and what the destination answered: an
extension per delivery with its status, the destination's id and its receipts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import profiles
from connectors.base import Acknowledgement, Envelope, Receipt
from gateway.delivery import deliver_next, outbox
from gateway.routing import RoutingTable, parse_config
from gateway.storage.db import session_scope
from tests.gateway.engine.support import FakeConnector
from tests.gateway.fhir.conftest import Facade


class _Relay(FakeConnector):
    def send(self, envelope: Envelope) -> Receipt:
        super().send(envelope)
        return Receipt(remote_id="relay-9", status="sent", ack_ref=f"<{envelope.idempotency_key}@relay>")


def test_document_reference_shows_deliveries_and_receipts(
    facade: Facade, ppa_record: dict[str, Any], tenant: Any
) -> None:
    rt = facade.runtime
    rt.destinations = {"relay": _Relay()}
    rt.routing = RoutingTable(
        config=parse_config(
            {
                "destinations": {"relay": {"connector": "fake", "category": "webhook"}},
                "rules": [{"document_types": ["ppa"], "destinations": ["relay"]}],
            }
        )
    )
    rt._bulkheads = None
    submission_id = facade.submit_ppa(ppa_record)
    out = deliver_next(rt, worker_id="w1")
    assert out is not None and out.status == "sent"
    with session_scope(rt.session_factory) as session:
        done = outbox.acknowledge(
            session,
            Acknowledgement(ack_ref=f"<{out.delivery_id}@relay>", outcome="delivered", kind="dsn", remote_id="dsn-1"),
            tenant_id=tenant.id,
            now=datetime.now(UTC),
            actor="source:test",
        )
    assert done.result == "applied"
    bundle = facade.get("/DocumentReference", params={"patient": ppa_record["person"]["local_id"]}).json()
    docs = [e["resource"] for e in bundle["entry"]]
    assert docs and all(d["identifier"][2]["value"] == submission_id for d in docs)
    for doc in docs:
        (ext,) = doc["extension"]
        parts = {p["url"]: p for p in ext["extension"] if p["url"] != "receipt"}
        assert parts["destination"]["valueString"] == "relay"
        assert parts["status"]["valueCode"] == "delivered"
        assert parts["remoteId"]["valueString"] == "relay-9"
        (receipt,) = [p for p in ext["extension"] if p["url"] == "receipt"]
        fields = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in receipt["extension"]}
        assert fields["kind"] == "dsn" and fields["outcome"] == "delivered" and fields["remoteId"] == "dsn-1"
        assert profiles.validate(doc).ok, doc
    read = facade.get(f"/DocumentReference/{docs[0]['id']}").json()
    assert read["extension"] == docs[0]["extension"]
