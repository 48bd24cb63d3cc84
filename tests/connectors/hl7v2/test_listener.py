# ruff: noqa: F811 - the gateway test fixtures are imported by name and used as parameters
"""The ``mllp`` source over a real socket with the gateway's real sink (SQLite and PostgreSQL):
ACK after durability, duplicates, and hostile framing/content answered cleanly."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.base import InboundMessage, StoredInbound
from connectors.hl7v2 import MllpSource, MllpSourceSettings
from connectors.hl7v2.mllp import FS, VT, FrameReader, frame, read_frame
from gateway.inbound import DatabaseSink
from gateway.routing import ConfiguredSource
from gateway.storage.models import InboundMessage as InboundRow
from tests.connectors.hl7v2.support import EXAMPLES, adt, msa
from tests.gateway.api.conftest import runtime  # noqa: F401 - fixture
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


class _Listener:
    def __init__(self, source: MllpSource, sink: Any) -> None:
        self.source = source
        self.stop = threading.Event()
        self.thread = threading.Thread(target=source.run, args=(sink, self.stop), daemon=True)
        self.thread.start()
        self.port = source.address[1]

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def send(self, raw: bytes, sock: socket.socket | None = None) -> bytes:
        own = sock is None
        sock = sock or self.connect()
        try:
            sock.sendall(frame(raw))
            return read_frame(sock)
        finally:
            if own:
                sock.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def listener(runtime: Any, tenant: Any) -> Iterator[_Listener]:
    source = MllpSource(MllpSourceSettings(essms_finess=tenant.finess, port=0, max_message_bytes=64 * 1024))
    configured = ConfiguredSource("hospital-adt", source, tenant.code, None)
    runtime.sources = {"hospital-adt": configured}
    lst = _Listener(source, DatabaseSink(runtime, configured))
    yield lst
    lst.close()


def _stored(runtime: Any) -> list[InboundRow]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(InboundRow).order_by(InboundRow.received_at)))


def test_aa_only_after_the_message_is_committed_encrypted(listener: _Listener, runtime: Any) -> None:
    raw = (EXAMPLES / "pam-fr-consent" / "NonConsentementConsultation_OppositionAlimentation.er7").read_bytes()
    answer = listener.send(raw)
    assert msa(answer)[:2] == ["AA", "3977"]
    rows = _stored(runtime)
    assert len(rows) == 1
    assert rows[0].external_id == "GAM|CHU-X|3977"
    assert rows[0].status == "received"
    assert b"PAT-TROIS" not in rows[0].content_ct  # encrypted at rest
    assert rows[0].headers == {
        "message_type": "ADT^A01^ADT_A01",
        "control_id": "3977",
        "sender": "GAM|CHU-X",
        "version": "2.5",
    }


def test_a_duplicate_is_acknowledged_again_and_stored_once(listener: _Listener, runtime: Any) -> None:
    raw = adt("A01", control_id="DUP-1")
    with listener.connect() as sock:
        first = listener.send(raw, sock)
        second = listener.send(raw, sock)
    assert msa(first)[0] == "AA"
    assert msa(second)[0] == "AA"
    assert "duplicate" in msa(second)[2]
    assert len(_stored(runtime)) == 1
    # the same control id from another sender is another message
    assert msa(listener.send(adt("A01", control_id="DUP-1", sender="OTHER")))[0] == "AA"
    assert len(_stored(runtime)) == 2


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"PID|1||123\r", "100"),  # no MSH
        (b"MSH|^~\\&|APP|FAC|DUI|FAC|20240101||ADT^A01^ADT_A01||P|2.5\r", "101"),  # no MSH-10
        (b"MSH|^^\\&|APP|FAC|DUI|FAC|20240101||ADT^A01^ADT_A01|X1|P|2.5\r", "102"),  # wrong encoding chars
        (b"MSHA^~\\&|APP|FAC|DUI|FAC|20240101||ADT^A01^ADT_A01|X1|P|2.5\r", "102"),  # alphanumeric separator
        (b"MSH|^~\\&|APP|FAC|DUI|FAC|20240101||ADT^A01^ADT_A01|X1|P|9.9\r", "203"),  # unsupported version
        (b"MSH|^~\\&|APP|FAC|DUI|FAC|20240101||ORU^R01^ORU_R01|X1|P|2.5\r", "200"),  # unsupported type
        (b"MSH|^~\\&|APP|FAC|DUI|FAC|20240101||ADT^A99^ADT_A01|X1|P|2.5\r", "201"),  # unsupported trigger
        (
            b"MSH|^~\\&|APP|FAC|DUI|FAC|20240101||ADT^A01^ADT_A01|X1|P|2.5|||||FRA|UNICODE UTF-8\rPID|1||\xff\xfe\r",
            "102",
        ),  # invalid UTF-8
        (b"MSH|^~\\&|APP|FAC|DUI|FAC|20240101||ADT^A01^ADT_A01|X1|P|2.5|||||FRA|EBCDIC\r", "103"),  # unknown charset
    ],
)
def test_unacceptable_messages_get_a_clean_ar_and_nothing_is_stored(
    listener: _Listener, runtime: Any, raw: bytes, code: str
) -> None:
    answer = listener.send(raw)
    fields = msa(answer)
    assert fields[0] == "AR"
    assert f"ERR|||{code}^^HL70357|E" in answer.decode()
    assert _stored(runtime) == []
    # the listener still serves
    assert msa(listener.send(adt("A03", control_id="AFTER")))[0] == "AA"


def test_oversized_message_gets_ar_with_bounded_memory(listener: _Listener, runtime: Any) -> None:
    big = adt("A01", control_id="BIG-1") + b"NTE|1||" + b"x" * (1024 * 1024) + b"\r"
    answer = listener.send(big)
    assert msa(answer)[:2] == ["AR", "BIG-1"]
    assert "larger than allowed" in answer.decode()
    assert _stored(runtime) == []


def test_bytes_outside_a_frame_close_the_connection(listener: _Listener, runtime: Any) -> None:
    with listener.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert sock.recv(100) == b""  # closed, nothing answered
    with listener.connect() as sock:
        sock.sendall(VT + b"MSH|^~\\&|A|B" + VT + b"MSH" + FS + b"\r")  # a frame inside a frame
        assert sock.recv(100) == b""
    assert _stored(runtime) == []
    assert msa(listener.send(adt("A01", control_id="STILL")))[0] == "AA"


def test_a_truncated_frame_is_dropped_at_close(listener: _Listener, runtime: Any) -> None:
    with listener.connect() as sock:
        sock.sendall(VT + adt("A01", control_id="CUT")[:40])
    assert msa(listener.send(adt("A01", control_id="NEXT")))[0] == "AA"
    assert [r.external_id for r in _stored(runtime)] == ["APP|FAC|NEXT"]


def test_a_frame_split_across_reads_and_two_frames_in_one_read(listener: _Listener, runtime: Any) -> None:
    one, two = frame(adt("A01", control_id="S1")), frame(adt("A02", control_id="S2"))
    with listener.connect() as sock:
        for i in range(0, len(one), 7):
            sock.sendall(one[i : i + 7])
        assert msa(read_frame(sock))[0] == "AA"
        sock.sendall(one.replace(b"S1", b"S3") + two)
        # both answers may come in one read (one group commit): keep what follows the first frame
        reader, answers = FrameReader(1 << 20), []
        while len(answers) < 2:
            data = sock.recv(65536)
            assert data, "closed before both answers"
            answers += [f.content for f in reader.feed(data)]
        assert [msa(a)[:2] for a in answers] == [["AA", "S3"], ["AA", "S2"]]
    assert len(_stored(runtime)) == 3


class _FailingSink:
    def store(self, message: InboundMessage) -> StoredInbound:
        raise OSError("database down")


def test_storage_failure_is_never_aa() -> None:
    source = MllpSource(MllpSourceSettings(essms_finess="750000010", port=0))
    lst = _Listener(source, _FailingSink())
    try:
        answer = lst.send(adt("A01", control_id="F1"))
        assert msa(answer)[:2] == ["AR", "F1"]
        assert "ERR|||207^^HL70357" in answer.decode()
    finally:
        lst.close()


def test_concurrent_connections_every_aa_is_stored(listener: _Listener, runtime: Any) -> None:
    acked: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with listener.connect() as sock:
            for i in range(25):
                cid = f"C{n}-{i}"
                if msa(listener.send(adt("A01", control_id=cid), sock))[0] == "AA":
                    with lock:
                        acked.append(cid)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acked) == 100
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(InboundRow)) == 100


def test_tls_with_client_certificates(tmp_path: Any, runtime: Any, tenant: Any) -> None:
    import ssl

    from connectors.sandbox.mail.pki import DevPki

    pki = DevPki(tmp_path / "pki")
    source = MllpSource(
        MllpSourceSettings(
            essms_finess=tenant.finess,
            port=0,
            certificate_file=str(pki.server.cert_path),
            private_key_file=str(pki.server.key_path),
            client_ca_file=str(pki.ca_path),
        )
    )
    configured = ConfiguredSource("hospital-adt", source, tenant.code, None)
    lst = _Listener(source, DatabaseSink(runtime, configured))
    try:

        def tls_send(cert: Any) -> bytes:
            context = ssl.create_default_context(cafile=str(pki.ca_path))
            if cert is not None:
                context.load_cert_chain(str(cert.cert_path), str(cert.key_path))
            with (
                socket.create_connection(("127.0.0.1", lst.port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as sock,
            ):
                sock.sendall(frame(adt("A01", control_id=f"TLS-{id(cert)}")))
                return read_frame(sock)

        assert msa(tls_send(pki.client))[0] == "AA"
        for refused in (None, pki.rogue):  # no client certificate, or one from a CA nobody trusts
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                tls_send(refused)
        # plain MLLP on a TLS port: the handshake fails, nothing is stored, the listener still serves
        with pytest.raises((ConnectionError, OSError)):
            lst.send(adt("A01", control_id="PLAIN"))
        assert [r.external_id.rsplit("|", 1)[1] for r in _stored(runtime)] == [f"TLS-{id(pki.client)}"]
    finally:
        lst.close()


def test_store_many_answers_each_message(runtime: Any, tenant: Any) -> None:
    from gateway.inbound import InboundTooLarge

    source = MllpSource(MllpSourceSettings(essms_finess=tenant.finess, port=0))
    sink = DatabaseSink(runtime, ConfiguredSource("hospital-adt", source, tenant.code, None))

    def message(cid: str, content: bytes | None = None) -> InboundMessage:
        return InboundMessage(external_id=cid, content=content or adt("A01", control_id=cid), media_type="x")

    (first,) = sink.store_many([message("A")])
    assert isinstance(first, StoredInbound) and not first.duplicate
    big = message("BIG", b"x" * (runtime.settings.inbound_max_bytes + 1))
    answers = sink.store_many([message("A"), message("B"), message("B"), big, message("C")])
    assert isinstance(answers[0], StoredInbound) and answers[0].duplicate and answers[0].id == first.id
    assert isinstance(answers[1], StoredInbound) and not answers[1].duplicate
    assert isinstance(answers[2], StoredInbound) and answers[2].duplicate and answers[2].id == answers[1].id
    assert isinstance(answers[3], InboundTooLarge)
    assert isinstance(answers[4], StoredInbound) and not answers[4].duplicate
    assert sorted(r.external_id for r in _stored(runtime)) == ["A", "B", "C"]


class _BrokenBatchSink:
    def store(self, message: InboundMessage) -> StoredInbound:
        raise AssertionError("group commit uses store_many")

    def store_many(self, messages: Any) -> Any:
        raise OSError("transaction failed")


def test_a_failed_group_commit_answers_ar_to_every_message_of_the_batch() -> None:
    source = MllpSource(MllpSourceSettings(essms_finess="750000010", port=0))
    lst = _Listener(source, _BrokenBatchSink())
    try:
        answers: list[list[str]] = []

        def one(n: int) -> None:
            answers.append(msa(lst.send(adt("A01", control_id=f"G{n}"))))

        threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(a[0] for a in answers) == ["AR"] * 4
    finally:
        lst.close()


def test_stop_closes_idle_connections_promptly() -> None:
    import time

    source = MllpSource(MllpSourceSettings(essms_finess="750000010", port=0, idle_timeout_seconds=600))
    lst = _Listener(source, _FailingSink())
    socks = [lst.connect() for _ in range(3)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        lst.close()
        assert not lst.thread.is_alive()
        assert time.monotonic() - started < 2.0
        for sock in socks:
            assert sock.recv(10) == b""  # closed by the listener
    finally:
        for sock in socks:
            sock.close()


class _BatchRecorder:
    """The real sink, recording the size of each group commit."""

    def __init__(self, sink: DatabaseSink) -> None:
        self.sink = sink
        self.sizes: list[int] = []

    def store(self, message: InboundMessage) -> StoredInbound:
        raise AssertionError("group commit uses store_many")

    def store_many(self, messages: Any) -> Any:
        self.sizes.append(len(messages))
        return self.sink.store_many(messages)


def test_busy_connections_share_one_commit_within_the_window(runtime: Any, tenant: Any) -> None:
    import time

    source = MllpSource(MllpSourceSettings(essms_finess=tenant.finess, port=0, group_commit_window_ms=1000))
    configured = ConfiguredSource("hospital-adt", source, tenant.code, None)
    recorder = _BatchRecorder(DatabaseSink(runtime, configured))
    lst = _Listener(source, recorder)
    try:
        socks = [lst.connect() for _ in range(4)]
        # one message per connection, 20 ms apart (without the window: one commit each); the
        # first opens the window and its commit waits for the other three, busy since they
        # connected less than a second ago
        for n, sock in enumerate(socks):
            sock.sendall(frame(adt("A01", control_id=f"W{n}")))
            time.sleep(0.02)
        answers = [msa(read_frame(sock))[:2] for sock in socks]
        assert answers == [["AA", f"W{n}"] for n in range(4)]
        assert recorder.sizes == [4]
        assert len(_stored(runtime)) == 4
        for sock in socks:
            sock.close()
    finally:
        lst.close()


def test_two_listeners_share_a_port_with_reuse_port(runtime: Any, tenant: Any) -> None:
    first = MllpSource(MllpSourceSettings(essms_finess=tenant.finess, port=0, reuse_port=True))
    configured = ConfiguredSource("hospital-adt", first, tenant.code, None)
    one = _Listener(first, DatabaseSink(runtime, configured))
    second = MllpSource(MllpSourceSettings(essms_finess=tenant.finess, port=one.port, reuse_port=True))
    two = _Listener(second, DatabaseSink(runtime, configured))  # binding the same port fails without SO_REUSEPORT
    try:
        assert two.port == one.port
        for i in range(8):
            assert msa(one.send(adt("A01", control_id=f"R{i}")))[:2] == ["AA", f"R{i}"]
        assert len(_stored(runtime)) == 8
    finally:
        two.close()
        one.close()


def test_idle_connections_are_closed_and_the_connection_limit_holds(runtime: Any, tenant: Any) -> None:
    source = MllpSource(
        MllpSourceSettings(essms_finess=tenant.finess, port=0, idle_timeout_seconds=1.5, max_connections=1)
    )
    configured = ConfiguredSource("hospital-adt", source, tenant.code, None)
    lst = _Listener(source, DatabaseSink(runtime, configured))
    try:
        first = lst.connect()
        assert msa(lst.send(adt("A01", control_id="ONE"), first))[0] == "AA"
        # a second connection waits in the backlog while the first holds the only slot
        second = lst.connect()
        second.sendall(frame(adt("A01", control_id="TWO")))
        second.settimeout(0.3)
        with pytest.raises(TimeoutError):
            second.recv(100)
        # the first one falls silent: closed after the idle timeout, then the second is served
        first.settimeout(10)
        assert first.recv(100) == b""
        second.settimeout(10)
        assert msa(read_frame(second))[:2] == ["AA", "TWO"]
        first.close()
        second.close()
    finally:
        lst.close()
