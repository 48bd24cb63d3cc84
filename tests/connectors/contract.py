"""The contract every connector honours; each connector's tests subclass :class:`ConnectorContract`.

A subclass provides a real peer (a server on loopback) and says how to reach it::

    class TestWebhook(ConnectorContract):
        @pytest.fixture
        def peer(self): ...                          # a running peer, stopped after the test
        def connector(self, peer): ...               # a connector configured for that peer
        def down_connector(self): ...                # a connector whose peer is not listening
        def reject_next(self, peer): ...             # make the peer refuse the next delivery for good
        def fail_next(self, peer): ...               # make the peer fail the next delivery (may retry)
        def accepted_count(self, peer, envelope): ...  # how many times the peer accepted this envelope
        def slow_next(self, peer, seconds): ...     # optional: the peer answers after `seconds`
        def acknowledge_later(self, peer): ...      # optional: the peer accepts now, acknowledges later

The suite checks: success gives a receipt and the peer holds the document once; a resend of
the same envelope is safe (accepted once); peer down → TransientError; rejection →
PermanentError; temporary failure → TransientError; health ok with the peer up, ko when down;
a slow peer does not keep ``send`` past the envelope's deadline (TransientError soon after it);
a peer that acknowledges later gives a ``sent`` receipt with an ``ack_ref``. Optional hooks that
a connector's peer cannot do skip their test.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.base import Connector, Envelope, Health, PermanentError, Receipt, TransientError
from mappings.base import Code, ExchangeMetadata, RecordFacts, Rendition


def make_envelope(*, destination: str = "contract", version: int = 1, set_id: str | None = None) -> Envelope:
    """A small but complete envelope (one XML rendition with exchange metadata)."""
    sub = uuid.uuid4()
    doc_id = f"1.2.250.1.999.1.1^{sub.hex}"
    meta = ExchangeMetadata(
        type_code=Code("34133-9", "2.16.840.1.113883.6.1", "Synthèse"),
        class_code=Code("11", "1.2.250.1.213.1.1.4.1", "Synthèse"),
        format_code=Code("urn:test:format", "1.2.250.1.213.1.1.4.2.282"),
        healthcare_facility_type_code=Code("SA41", "1.2.250.1.71.4.2.4"),
        practice_setting_code=Code("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9"),
        confidentiality_code=Code("N", "2.16.840.1.113883.5.25"),
        mime_type="text/xml",
        title="Contract document",
        creation_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    rendition = Rendition(
        kind="note",
        media_type="application/xml",
        content=f'<note xmlns="urn:test" id="{sub.hex}">contract</note>'.encode(),
        document_id=doc_id,
        set_id=set_id or f"1.2.250.1.999.1.1.{sub.int}",
        version=version,
        metadata=meta,
    )
    return Envelope(
        delivery_id=str(uuid.uuid4()),
        submission_id=str(sub),
        idempotency_key=f"delivery-{uuid.uuid4()}",
        tenant="contract-tenant",
        destination=destination,
        document_type="test-note",
        renditions=(rendition,),
        facts=RecordFacts(person_ref="P-CONTRACT-1", essms_finess="010000001"),
    )


class ConnectorContract:
    """Subclass as ``Test<Name>`` and implement the hooks below."""

    # -- hooks -----------------------------------------------------------------------------
    @pytest.fixture
    def peer(self) -> Any:
        raise NotImplementedError

    def connector(self, peer: Any) -> Connector:
        raise NotImplementedError

    def down_connector(self) -> Connector:
        raise NotImplementedError

    def reject_next(self, peer: Any) -> None:
        raise NotImplementedError

    def fail_next(self, peer: Any) -> None:
        raise NotImplementedError

    def accepted_count(self, peer: Any, envelope: Envelope) -> int:
        raise NotImplementedError

    def slow_next(self, peer: Any, seconds: float) -> None:
        pytest.skip("this connector's peer cannot be slowed down")

    def acknowledge_later(self, peer: Any) -> None:
        pytest.skip("this connector's peer never acknowledges later")

    def envelope(self) -> Envelope:
        return make_envelope()

    # -- the contract ------------------------------------------------------------------------
    def test_describes_itself(self, peer: Any) -> None:
        conn = self.connector(peer)
        assert isinstance(conn.name, str) and conn.name
        assert isinstance(conn.version, str) and conn.version
        assert conn.Settings.model_fields, "a connector has a Pydantic settings model"

    def test_send_delivers_once(self, peer: Any) -> None:
        env = self.envelope()
        receipt = self.connector(peer).send(env)
        assert isinstance(receipt, Receipt)
        assert self.accepted_count(peer, env) == 1

    def test_resend_is_recognised(self, peer: Any) -> None:
        conn = self.connector(peer)
        env = self.envelope()
        first = conn.send(env)
        second = conn.send(env)
        assert self.accepted_count(peer, env) == 1
        assert first.remote_id == second.remote_id

    def test_peer_down_is_transient(self) -> None:
        with pytest.raises(TransientError) as info:
            self.down_connector().send(self.envelope())
        assert info.value.__cause__ is not None, "library errors are wrapped with raise ... from"

    def test_rejection_is_permanent(self, peer: Any) -> None:
        env = self.envelope()
        self.reject_next(peer)
        with pytest.raises(PermanentError):
            self.connector(peer).send(env)
        assert self.accepted_count(peer, env) == 0

    def test_temporary_failure_is_transient_then_succeeds(self, peer: Any) -> None:
        conn = self.connector(peer)
        env = self.envelope()
        self.fail_next(peer)
        with pytest.raises(TransientError):
            conn.send(env)
        assert self.accepted_count(peer, env) == 0
        conn.send(env)
        assert self.accepted_count(peer, env) == 1

    def test_health_ok(self, peer: Any) -> None:
        health = self.connector(peer).health()
        assert isinstance(health, Health)
        assert health.ok, health.detail

    def test_health_ko_when_peer_down(self) -> None:
        health = self.down_connector().health()
        assert isinstance(health, Health)
        assert not health.ok

    def test_deadline_is_honoured(self, peer: Any) -> None:
        self.slow_next(peer, 5.0)
        env = dataclasses.replace(self.envelope(), deadline=datetime.now(UTC) + timedelta(seconds=1))
        started = time.monotonic()
        with pytest.raises(TransientError):
            self.connector(peer).send(env)
        assert time.monotonic() - started < 2.0, "send returned long after the envelope's deadline"

    def test_accepted_now_acknowledged_later(self, peer: Any) -> None:
        self.acknowledge_later(peer)
        env = self.envelope()
        receipt = self.connector(peer).send(env)
        assert receipt.status == "sent"
        assert receipt.ack_ref, "a sent receipt names what its acknowledgement will refer to"
        assert self.accepted_count(peer, env) == 1
