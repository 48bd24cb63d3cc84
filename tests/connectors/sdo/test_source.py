"""The ``sdo`` poller against the SI-SdO simulator: J-30 first run, catch-up after an outage with no
loss and no duplicate, paging, duplicates, late decisions, cancellation, crash before the cursor
moves, lost state file, per-ESSMS filtering, and hostile content given to ``interpret``."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.base import InboundMessage, StoredInbound, TransientError
from connectors.sandbox.sdo import SdoSandbox
from connectors.sdo import SdoSource, SdoSourceSettings
from tests.connectors.sdo.conftest import ESSMS_A, ESSMS_B


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class MemorySink:
    """Keeps the first copy of each external_id, like the gateway's DatabaseSink; can fail on demand."""

    messages: list[InboundMessage] = field(default_factory=list)
    fail_after: int | None = None
    calls: int = 0

    def store(self, message: InboundMessage) -> StoredInbound:
        self.calls += 1
        if self.fail_after is not None and len(self.messages) >= self.fail_after:
            raise RuntimeError("database unavailable")
        for i, known in enumerate(self.messages):
            if known.external_id == message.external_id:
                return StoredInbound(id=str(i), duplicate=True)
        self.messages.append(message)
        return StoredInbound(id=str(len(self.messages) - 1), duplicate=False)


@pytest.fixture
def clock(sandbox: SdoSandbox) -> Clock:
    c = Clock()
    sandbox.simulator.state.clock = c
    return c


def _source(box: SdoSandbox, clock: Clock, tmp_path: Path, finess: str = ESSMS_A, **extra: Any) -> SdoSource:
    essms = box.essms[finess]
    settings = SdoSourceSettings(
        base_url=box.base_url,
        token_url=box.token_url,
        ca_file=str(box.ca_file),
        essms_finess=finess,
        client_id=essms.client_id,
        client_secret=SecretStr(essms.client_secret),
        state_file=str(tmp_path / f"sdo-{finess}.json"),
        timeout=5.0,
        **extra,
    )
    return SdoSource(settings, clock=clock)


def _events(source: SdoSource, sink: MemorySink) -> list[dict[str, Any]]:
    out = []
    for message in sink.messages:
        interpretation = source.interpret(message)
        assert not interpretation.note, interpretation.note
        [event] = interpretation.events
        out.append({"series": event.series, "type": event.event_type, **event.payload})
    return out


def test_first_run_looks_back_30_days_only(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    sim = sandbox.simulator
    sim.publish_decision(finess=ESSMS_A, id_decision="OLD", at=clock.now - timedelta(days=40))
    recent = sim.publish_decision(finess=ESSMS_A, id_decision="RECENT", at=clock.now - timedelta(days=10))
    sink = MemorySink()
    assert _source(sandbox, clock, tmp_path).poll_once(sink) == 1
    [event] = _events(_source(sandbox, clock, tmp_path), sink)
    assert event["idNat_Decision"] == recent["idNat_Decision"] and event["idDecision"] == "RECENT"
    assert event["type"] == "sdo.decision" and event["state"] == "active"
    assert base64.b64decode(event["document"]["data_base64"]).startswith(b"<?xml")


def test_catch_up_after_two_day_outage_no_loss_no_duplicate(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    sim = sandbox.simulator
    source = _source(sandbox, clock, tmp_path, page_size=4)
    sink = MemorySink()
    sim.publish_decision(finess=ESSMS_A, id_decision="BEFORE")
    assert source.poll_once(sink) == 1
    cursor_before = dict(source.iter_state())["decisions"]

    sim.set_faults(down=True)
    published = []
    for hour in range(0, 48, 3):  # two days of decisions while the SI-SdO cannot be read
        clock.advance(hours=3)
        published.append(sim.publish_decision(finess=ESSMS_A, id_decision=f"OUTAGE-{hour:02d}"))
        with pytest.raises(TransientError):
            source.poll_once(sink)
    assert dict(source.iter_state())["decisions"] == cursor_before, "the cursor never moves during an outage"
    # decisions of the other ESSMS and one cancelled during the outage
    sim.publish_decision(finess=ESSMS_B, id_decision="NOT-MINE")
    cancelled = sim.publish_decision(finess=ESSMS_A, id_decision="OUTAGE-00", status="cancelled")

    sim.set_faults(down=False, duplicates=True)  # the SI-SdO repeats entries in its pages too
    stored = source.poll_once(sink)
    assert stored == len(published) == 16  # OUTAGE-00 arrives as it is now: cancelled
    keys = [m.external_id for m in sink.messages]
    assert len(keys) == len(set(keys)) == 1 + 16
    events = _events(source, sink)
    assert {e["idDecision"] for e in events} == {"BEFORE"} | {p["idDecision"] for p in published}
    [latest] = [e for e in events if e["series"] == cancelled["idNat_Decision"]]
    assert latest["state"] == "cancelled" and latest["fhir"]["versionId"] == "2"
    assert source.poll_once(sink) == 0, "a poll after the catch-up stores nothing"
    assert sink.calls == len(sink.messages)


def test_late_decision_within_the_overlap_is_caught(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    sim = sandbox.simulator
    source = _source(sandbox, clock, tmp_path)
    sink = MemorySink()
    sim.publish_decision(finess=ESSMS_A, id_decision="ON-TIME")
    source.poll_once(sink)
    clock.advance(hours=1)
    late = sim.publish_decision(finess=ESSMS_A, id_decision="LATE", late_by=timedelta(hours=5))
    assert source.poll_once(sink) == 1
    assert sink.messages[-1].external_id.startswith(f"decision:{late['idNat_Decision']}:")


def test_cancellation_and_reactivation_are_new_versions_of_one_series(
    sandbox: SdoSandbox, clock: Clock, tmp_path: Path
) -> None:
    sim = sandbox.simulator
    source = _source(sandbox, clock, tmp_path)
    sink = MemorySink()
    decision = sim.publish_decision(finess=ESSMS_A, id_decision="D-CANCEL")
    source.poll_once(sink)
    clock.advance(minutes=10)
    sim.publish_decision(finess=ESSMS_A, id_decision="D-CANCEL", status="cancelled")
    source.poll_once(sink)
    clock.advance(minutes=10)
    sim.publish_decision(finess=ESSMS_A, id_decision="D-CANCEL", status="active")
    source.poll_once(sink)
    events = _events(source, sink)
    assert [e["series"] for e in events] == [decision["idNat_Decision"]] * 3
    assert [e["state"] for e in events] == ["active", "cancelled", "active"]
    assert [e["fhir"]["versionId"] for e in events] == ["1", "2", "3"]


def test_sink_failure_leaves_the_cursor_and_the_rest_is_stored_next_time(
    sandbox: SdoSandbox, clock: Clock, tmp_path: Path
) -> None:
    sim = sandbox.simulator
    for n in range(5):
        clock.advance(minutes=1)
        sim.publish_decision(finess=ESSMS_A, id_decision=f"D{n}")
    source = _source(sandbox, clock, tmp_path)
    sink = MemorySink(fail_after=2)
    with pytest.raises(RuntimeError):
        source.poll_once(sink)
    assert "decisions" not in dict(source.iter_state()) or dict(source.iter_state())["decisions"] is None
    sink.fail_after = None
    assert _source(sandbox, clock, tmp_path).poll_once(sink) == 3, "stored ones are remembered, not fetched again"
    assert [e["idDecision"] for e in _events(source, sink)] == ["D0", "D1", "D2", "D3", "D4"], "oldest first"


def test_lost_state_file_costs_a_catch_up_not_a_duplicate(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    sim = sandbox.simulator
    sim.publish_decision(finess=ESSMS_A, id_decision="D1")
    sim.publish_decision(finess=ESSMS_A, id_decision="D2")
    sink = MemorySink()
    source = _source(sandbox, clock, tmp_path)
    assert source.poll_once(sink) == 2
    Path(source.settings.state_file).unlink()
    again = _source(sandbox, clock, tmp_path)
    again.poll_once(sink)  # fetched again, but the sink recognises both
    assert len(sink.messages) == 2


def test_each_essms_sees_only_its_decisions(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    sim = sandbox.simulator
    sim.publish_decision(finess=ESSMS_A, id_decision="A1")
    sim.publish_decision(finess=ESSMS_B, id_decision="B1")
    sim.publish_decision(finess=ESSMS_B, id_decision="B2")
    sink_a, sink_b = MemorySink(), MemorySink()
    _source(sandbox, clock, tmp_path, ESSMS_A).poll_once(sink_a)
    source_b = _source(sandbox, clock, tmp_path, ESSMS_B)
    source_b.poll_once(sink_b)
    assert len(sink_a.messages) == 1 and len(sink_b.messages) == 2
    assert {e["idDecision"] for e in _events(source_b, sink_b)} == {"B1", "B2"}
    assert all(e.essms_finess == ESSMS_B for m in sink_b.messages for e in source_b.interpret(m).events)


def test_oversized_document_is_stored_as_a_note_not_lost(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="BIG", person={"family": "X" * 300_000})
    source = _source(sandbox, clock, tmp_path, max_document_bytes=100_000)
    sink = MemorySink()
    assert source.poll_once(sink) == 1
    [event] = source.interpret(sink.messages[0]).events
    assert event.event_type == "sdo.unreadable" and "larger than" in event.payload["note"]


def test_run_polls_until_stopped_and_survives_an_outage(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    sim = sandbox.simulator
    source = _source(sandbox, clock, tmp_path, poll_seconds=0.1)
    sink = MemorySink()
    stop = threading.Event()
    sim.set_faults(fail_next=2)
    sim.publish_decision(finess=ESSMS_A, id_decision="RUN")
    thread = threading.Thread(target=source.run, args=(sink, stop))
    thread.start()
    try:
        for _ in range(100):
            if sink.messages:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        thread.join(10)
    assert len(sink.messages) == 1 and not thread.is_alive()
    assert source.health().ok


# -- hostile content given to interpret ------------------------------------------------------------
def _interpret(content: bytes) -> Any:
    settings = SdoSourceSettings(
        base_url="https://127.0.0.1:9/fhir",
        auth="mtls",
        certificate_file="/nonexistent.crt",
        private_key_file="/nonexistent.key",
        essms_finess=ESSMS_A,
        state_file="/nonexistent/state.json",
    )
    return SdoSource(settings).interpret(
        InboundMessage(external_id="x", content=content, media_type="application/fhir+json")
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
        (b'{"resourceType": "DocumentReference", "a": ' + b"[" * 70 + b"]" * 70 + b"}", "nests deeper"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b'{"resourceType": "DocumentReference", "x": NaN}', "NaN"),
        (b'{"resourceType": "DocumentReference", "x": ' + b"9" * 5000 + b"}", "too large"),
        (b"not json", "not JSON"),
        (b'"a string"', "not a FHIR resource"),
        (b'{"resourceType": "Patient"}', "neither"),
        (b'{"resourceType": "DocumentReference", "identifier": "D1"}', "no idDecision"),
        (b'{"resourceType": "DocumentReference", "identifier": [{"use": "usual", "value": 12}]}', "no idDecision"),
        (
            b'{"resourceType": "DocumentReference", "identifier": [{"use": "official", "value": "'
            + b"V" * 500
            + b'"}]}',
            "no idDecision",
        ),
        (b'{"resourceType": "Task", "input": {"type": 1}}', "no idDecision"),
    ],
)
def test_hostile_content_gives_a_note(content: bytes, expected: str) -> None:
    result = _interpret(content)
    assert result.events == () and expected in result.note
    assert content[:20].decode("utf-8", "replace") not in result.note or len(content) < 3


def test_wrong_types_inside_a_decision_are_dropped_not_fatal() -> None:
    resource = {
        "resourceType": "DocumentReference",
        "id": ["not", "an", "id"],
        "meta": {"versionId": {"x": 1}, "lastUpdated": 42},
        "identifier": [{"use": "usual", "value": "D1"}, "junk", {"use": "official", "value": None}],
        "status": {"bad": True},
        "type": "57830-2",
        "content": [{"attachment": {"data": "!!! not base64 !!!", "title": ["x"]}}],
    }
    [event] = _interpret(json.dumps(resource).encode()).events
    assert event.series == "mdph:D1"
    assert event.payload["fhir"] == {"id": None, "versionId": None, "lastUpdated": None, "status": None, "type": None}
    assert event.payload["document"] == {"note": "data is not base64"}


def test_huge_body_is_refused_without_parsing() -> None:
    result = _interpret(b'{"resourceType": "DocumentReference", "pad": "' + b"x" * (33 * 1024 * 1024) + b'"}')
    assert result.events == () and "larger than" in result.note


def test_statuses_feed_turns_tasks_into_status_events(sandbox: SdoSandbox, clock: Clock, tmp_path: Path) -> None:
    from connectors.sdo import SdoConnector, SdoConnectorSettings
    from tests.connectors.sdo.conftest import credentials, status_envelope

    sim = sandbox.simulator
    decision = sim.publish_decision(finess=ESSMS_A, id_decision="D-STATUS")
    connector = SdoConnector(
        SdoConnectorSettings(base_url=sandbox.base_url, token_url=sandbox.token_url, ca_file=str(sandbox.ca_file))
    )
    connector.send(status_envelope(decision, credentials(sandbox.essms[ESSMS_A]), statut="45", motif="116"))
    sink = MemorySink()
    source = _source(sandbox, clock, tmp_path, statuses=True)
    assert source.poll_once(sink) == 2
    status = [e for e in _events(source, sink) if e["type"] == "sdo.status"]
    assert len(status) == 1 and status[0]["series"] == decision["idNat_Decision"]
    assert status[0]["statutESMS"]["code"] == "45" and status[0]["motifESMS"]["code"] == "116"
    assert status[0]["idNat_Struct"] == f"1{ESSMS_A}"


def test_gateway_wiring_is_accepted_by_the_routing_file(sandbox: SdoSandbox, tmp_path: Path) -> None:
    from gateway.routing import build_sources, parse_config

    wiring = sandbox.gateway_wiring(tenant="demo", directory=tmp_path)
    routing = wiring["routing"]
    routing["destinations"]["dui"] = {
        "connector": "webhook",
        "category": "webhook",
        "settings": {"url": "http://127.0.0.1:9", "signing": False},
    }
    sources = build_sources(parse_config(routing))
    assert sorted(sources) == [f"viatrajectoire-{ESSMS_A}", f"viatrajectoire-{ESSMS_B}"]
    assert all(entry["password"].startswith("file:") for entry in wiring["credentials"])


# -- a hostile SI-SdO: what the poller's search parser is given --------------------------------------
class _Hostile:
    """A plain HTTP server answering every search with ``search`` and every read with ``read``."""

    def __init__(self, search: bytes, read: bytes = b"{}") -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = outer.search if "?" in self.path else outer.read
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.search, self.read = search, read
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _hostile_source(url: str, tmp_path: Path) -> SdoSource:
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"  # plain HTTP: requests only checks they exist
    cert.write_text("unused")
    key.write_text("unused")
    settings = SdoSourceSettings(
        base_url=url,
        auth="mtls",
        certificate_file=str(cert),
        private_key_file=str(key),
        essms_finess=ESSMS_A,
        state_file=str(tmp_path / "state.json"),
        timeout=5.0,
    )
    return SdoSource(settings)


@pytest.mark.parametrize(
    "search",
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"resourceType": "Bundle", "entry": ' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"resourceType": "OperationOutcome"}',
        b"\x00\xff garbage",
    ],
)
def test_unreadable_search_answers_are_transient_and_keep_the_cursor(search: bytes, tmp_path: Path) -> None:
    server = _Hostile(search)
    try:
        source = _hostile_source(server.url, tmp_path)
        with pytest.raises(TransientError, match="not a Bundle"):
            source.poll_once(MemorySink())
        assert dict(source.iter_state()).get("decisions") is None
    finally:
        server.close()


def test_wrong_types_in_a_search_are_skipped_and_bad_ids_never_fetched(tmp_path: Path) -> None:
    search = json.dumps(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": "not a list",
            "entry": [
                "junk",
                {"resource": "junk"},
                {"resource": {"resourceType": "DocumentReference", "id": "../../etc/passwd"}},
                {"resource": {"resourceType": "DocumentReference", "id": 12}},
                {"resource": {"resourceType": "DocumentReference", "id": "ok-1", "meta": {"versionId": ["x"]}}},
            ],
        }
    ).encode()
    read = json.dumps(
        {"resourceType": "DocumentReference", "id": "ok-1", "identifier": [{"use": "usual", "value": "D1"}]}
    ).encode()
    server = _Hostile(search, read)
    try:
        sink = MemorySink()
        assert _hostile_source(server.url, tmp_path).poll_once(sink) == 1
        assert sink.messages[0].external_id.startswith("decision:mdph:D1:h")
    finally:
        server.close()


def test_next_link_to_another_server_is_not_followed(tmp_path: Path) -> None:
    search = json.dumps(
        {"resourceType": "Bundle", "link": [{"relation": "next", "url": "https://attacker.example/steal"}], "entry": []}
    ).encode()
    server = _Hostile(search)
    try:
        with pytest.raises(TransientError, match="another server"):
            _hostile_source(server.url, tmp_path).poll_once(MemorySink())
    finally:
        server.close()


def test_a_message_the_sink_refuses_for_its_size_becomes_a_note(
    sandbox: SdoSandbox, clock: Clock, tmp_path: Path
) -> None:
    class SmallSink(MemorySink):
        def store(self, message: InboundMessage) -> StoredInbound:
            if len(message.content) > 2000:
                raise ValueError("message too large for the gateway")  # like gateway.inbound.InboundTooLarge
            return super().store(message)

    sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="BIG", person={"family": "X" * 5000})
    sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="SMALL", at=clock.now + timedelta(seconds=1))
    source = _source(sandbox, clock, tmp_path)
    sink = SmallSink()
    assert source.poll_once(sink) == 2, "the feed is not blocked"
    kinds = [source.interpret(m).events[0].event_type for m in sink.messages]
    assert kinds == ["sdo.unreadable", "sdo.decision"]
