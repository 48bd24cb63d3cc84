"""POST /v1/submissions: stored with its audit event before 202; malformed input leaves no row."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import Conflict, Forbidden
from gateway.security.crypto import KeyRing
from gateway.services import intake
from gateway.storage.models import ApiClient, Submission
from tests.gateway.api.live import Api
from tests.gateway.api.support import (
    MAX_BODY,
    TEST_FINESS_2,
    audit_events,
    bearer,
    count_rows,
    note,
    post_note,
)

PROBLEM = "application/problem+json"


def test_accepted_submission_is_stored_encrypted_with_its_audit_event(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    body = note(tenant.finess, text="Porte un pacemaker; allergie à la pénicilline.")
    response = post_note(client, tenant.api_key, body, **{"X-Correlation-ID": "corr-123"})

    assert response.status_code == 202, response.text
    sid = response.json()["id"]
    assert response.headers["Location"] == f"/v1/submissions/{sid}"
    assert response.headers["X-Correlation-ID"] == "corr-123"
    assert response.json()["status"] == "received"
    with session_factory() as session:
        row = session.get(Submission, sid)
        assert row is not None
        assert (row.status, row.document_type, row.essms_finess, row.person_ref) == (
            "received",
            "test-note",
            tenant.finess,
            "P-0001",
        )
        assert row.correlation_id == "corr-123"
        assert row.client_id == tenant.client_id
        assert b"pacemaker" not in row.payload_ct
        assert row.facts is not None and row.facts["essms_finess"] == tenant.finess
    events = audit_events(session_factory, entity_id=sid)
    assert [(e.action, e.actor, e.person_ref) for e in events] == [("received", f"client:{tenant.client_id}", "P-0001")]

    record = client.get(f"/v1/submissions/{sid}/record", headers=bearer(tenant.api_key))
    assert record.status_code == 200
    assert record.json() == body["record"]


def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _valid(finess: str) -> dict[str, Any]:
    return note(finess)


# (id, body bytes or callable(finess) -> dict, headers, expected status, problem type suffix, pointer or None)
MALFORMED: list[tuple[str, Any, dict[str, str], int, str, str | None]] = [
    ("invalid-json", b'{"document_type": "test-note", "record": {', {}, 400, "invalid-json", None),
    ("trailing-comma", b'{"document_type": "test-note",}', {}, 400, "invalid-json", None),
    ("nan", b'{"document_type": "test-note", "record": {"x": NaN}}', {}, 400, "invalid-json", None),
    ("not-utf8", b'{"document_type": "\xff"}', {}, 400, "invalid-json", None),
    ("empty-body", b"", {}, 400, "invalid-json", None),
    ("top-level-array", b"[1, 2]", {}, 422, "validation", ""),
    (
        "wrong-type",
        lambda f: {"document_type": "test-note", "record": {"person_ref": "P-1", "essms_finess": f, "text": 42}},
        {},
        422,
        "validation",
        "/record/text",
    ),
    (
        "missing-required",
        lambda f: {"document_type": "test-note", "record": {"person_ref": "P-1", "text": "x"}},
        {},
        422,
        "validation",
        "/record/essms_finess",
    ),
    (
        "unknown-record-field",
        lambda f: {"document_type": "test-note", "record": {**note(f)["record"], "colour": "blue"}},
        {},
        422,
        "validation",
        "/record/colour",
    ),
    ("unknown-top-field", lambda f: {**note(f), "priority": "high"}, {}, 422, "validation", "/priority"),
    ("missing-document-type", lambda f: {"record": note(f)["record"]}, {}, 422, "validation", "/document_type"),
    ("record-not-object", lambda f: {"document_type": "test-note", "record": [1]}, {}, 422, "validation", "/record"),
    (
        "unknown-document-type",
        lambda f: {**note(f), "document_type": "radiology"},
        {},
        422,
        "validation",
        "/document_type",
    ),
    ("wrong-content-type", _valid, {"Content-Type": "text/plain"}, 415, "unsupported-media-type", None),
    (
        "form-content-type",
        _valid,
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported-media-type",
        None,
    ),
    ("no-api-key", _valid, {"Authorization": ""}, 401, "unauthorized", None),
    ("wrong-api-key", _valid, {"Authorization": "Bearer dgw_00000000_" + "A" * 43}, 401, "unauthorized", None),
    ("foreign-essms", lambda f: note(TEST_FINESS_2), {}, 403, "forbidden", None),
    ("bad-idempotency-key", _valid, {"Idempotency-Key": "x" * 300}, 422, "validation", None),
    (
        "oversized-declared",
        b'{"document_type": "test-note", "record": {"text": "' + b"a" * MAX_BODY + b'"}}',
        {},
        413,
        "payload-too-large",
        None,
    ),
]


def _check_malformed(
    client: Api,
    tenant: Any,
    session_factory: sessionmaker[Session],
    case: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    kind: str,
    pointer: str | None,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body(tenant.finess)).encode()
    all_headers = {**bearer(tenant.api_key), "Content-Type": "application/json", **headers}
    all_headers = {k: v for k, v in all_headers.items() if v}
    response = client.post("/v1/submissions", data=content, headers=all_headers)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == f"https://dui-gateway.org/problems/{kind}"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert problem["instance"] == "/v1/submissions"
    assert problem["correlation_id"] == response.headers["X-Correlation-ID"]
    if pointer is not None:
        assert pointer in [e.get("pointer") for e in problem["errors"]], problem
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if case in ("invalid-json", "trailing-comma"):
        assert "line 1 column" in problem["detail"] and isinstance(problem["position"], int)
    if case == "bad-idempotency-key":
        assert problem["errors"][0]["parameter"] == "Idempotency-Key"
    assert count_rows(session_factory) == (0, 0)


def test_malformed_input_gets_a_precise_problem_and_leaves_no_row(
    client: Api, tenant: Any, other_tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    """Every case against one database (fast); the failure message names the failing cases."""
    failures: list[str] = []
    for case, body, headers, status, kind, pointer in MALFORMED:
        try:
            _check_malformed(client, tenant, session_factory, case, body, headers, status, kind, pointer)
        except AssertionError as exc:
            failures.append(f"{case}: {exc}")
    assert len(MALFORMED) >= 20
    assert not failures, "\n".join(failures)


def test_error_codes_are_precise(client: Api, tenant: Any) -> None:
    record = {"person_ref": "P-1", "essms_finess": tenant.finess, "text": 42, "colour": "red"}
    response = post_note(client, tenant.api_key, {"document_type": "test-note", "record": record})
    errors = {e["pointer"]: e for e in response.json()["errors"]}
    assert errors["/record/text"]["code"] == "string_type"
    assert errors["/record/colour"]["code"] == "extra_forbidden"
    assert "colour" in errors["/record/colour"]["detail"]
    response = post_note(client, tenant.api_key, {"document_type": "test-note"})
    assert {e["pointer"]: e["code"] for e in response.json()["errors"]} == {"/record": "missing"}
    response = post_note(client, tenant.api_key, {**note(tenant.finess), "document_type": "radiology"})
    assert response.json()["errors"][0]["code"] == "unknown_document_type"
    assert "test-note" in response.json()["errors"][0]["detail"]


def test_oversized_chunked_body_is_cut_while_reading(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    """No Content-Length to trust: the limit is enforced on the bytes actually received."""
    payload = json.dumps(note(tenant.finess, text="a" * (MAX_BODY * 2))).encode()
    response = client.post(
        "/v1/submissions",
        data=_chunks(payload),
        headers={**bearer(tenant.api_key), "Content-Type": "application/json"},
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413, response.text
    assert response.json()["type"].endswith("/payload-too-large")
    assert count_rows(session_factory) == (0, 0)


def test_problem_details_never_echo_personal_data(client: Api, tenant: Any) -> None:
    record = {"person_ref": "DUPONT Jeanne née le 12/03/1941 " * 3, "essms_finess": "JEANNE-DUPONT", "text": ""}
    response = post_note(client, tenant.api_key, {"document_type": "test-note", "record": record})
    assert response.status_code == 422
    assert "DUPONT" not in response.text and "Jeanne" not in response.text and "1941" not in response.text
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert pointers == {"/record/person_ref", "/record/essms_finess", "/record/text"}


def test_read_only_client_cannot_submit(
    client: Api, auditor_key: str, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    response = post_note(client, auditor_key, note(tenant.finess))
    assert response.status_code == 403
    assert "submissions:write" in response.json()["detail"]  # the scope it lacks, by its current name
    assert count_rows(session_factory) == (0, 0)


def test_same_idempotency_key_and_body_returns_the_first_answer(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    body = note(tenant.finess)
    first = post_note(client, tenant.api_key, body, **{"Idempotency-Key": "order-1"})
    # same content, other key order and spacing: the canonical body is the same
    reordered = json.dumps(
        {"record": dict(reversed(list(body["record"].items()))), "document_type": "test-note"}, indent=2
    )
    second = client.post(
        "/v1/submissions",
        data=reordered.encode(),
        headers={**bearer(tenant.api_key), "Content-Type": "application/json", "Idempotency-Key": "order-1"},
    )
    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert count_rows(session_factory) == (1, 1)

    other = post_note(client, tenant.api_key, note(tenant.finess, text="autre"), **{"Idempotency-Key": "order-1"})
    assert other.status_code == 409
    assert other.headers["content-type"] == PROBLEM
    assert other.json()["type"].endswith("/conflict")
    assert count_rows(session_factory) == (1, 1)

    # another key, same body: a new submission
    third = post_note(client, tenant.api_key, body, **{"Idempotency-Key": "order-2"})
    assert third.status_code == 202 and third.json()["id"] != first.json()["id"]
    assert count_rows(session_factory) == (2, 2)


def test_idempotency_keys_are_per_tenant(
    client: Api, tenant: Any, other_tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    a = post_note(client, tenant.api_key, note(tenant.finess), **{"Idempotency-Key": "k"})
    b = post_note(client, other_tenant.api_key, note(other_tenant.finess), **{"Idempotency-Key": "k"})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_concurrent_identical_requests_make_one_row(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    body = note(tenant.finess)
    results: list[Any] = []
    barrier = threading.Barrier(6)

    def send() -> None:
        barrier.wait()
        results.append(post_note(client, tenant.api_key, body, **{"Idempotency-Key": "same"}))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 6
    assert {r.status_code for r in results} == {202}
    assert len({r.json()["id"] for r in results}) == 1
    assert count_rows(session_factory) == (1, 1)


def test_losing_the_insert_race_returns_the_winner(
    tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    """Two transactions both see no row for the key; the second one to insert re-reads the winner.

    On PostgreSQL the loser blocks on the unique index until the winner commits, then hits the
    IntegrityError path; on SQLite it waits for the write lock and then finds the row.
    """
    record = note(tenant.finess)["record"]
    with session_factory() as s:
        client_row = s.get(ApiClient, tenant.client_id)
        assert client_row is not None

    def submit(session: Session, record: dict[str, Any]) -> tuple[Submission, bool]:
        return intake.submit(
            session,
            client=client_row,
            document_type="test-note",
            record_json=record,
            idempotency_key="race",
            keyring=keyring,
            correlation_id="c",
        )

    winner = session_factory()
    first, created = submit(winner, record)
    assert created
    outcome: dict[str, Any] = {}

    def loser() -> None:
        with session_factory() as session:
            try:
                sub, was_created = submit(session, record)
                outcome["result"] = (sub.id, was_created)
                session.commit()
            except Exception as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=loser)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive()  # blocked behind the winner's transaction
    winner.commit()
    winner.close()
    thread.join(timeout=30)
    assert "error" not in outcome, outcome
    assert outcome["result"] == (first.id, False)
    with session_factory() as s:
        assert len(list(s.scalars(select(Submission)))) == 1

    # and the loser with another body gets a conflict
    with session_factory() as session, pytest.raises(Conflict):
        submit(session, {**record, "text": "autre"})


def test_declared_length_over_the_limit_is_refused_before_reading(tenant: Any, client: Api) -> None:
    """Content-Length over the limit: 413 at once, without waiting for a body that never comes."""
    host, port = client.base_url.removeprefix("http://").split(":")
    head = (
        "POST /v1/submissions HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {tenant.api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY * 10}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"document_type": ')
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", reply[:200]
    assert b"application/problem+json" in rest


def test_validator_messages_quoting_the_input_are_replaced() -> None:
    """A record model whose validator quotes the value must not leak it through the API."""

    class Person(BaseModel):
        ins: str

        @field_validator("ins")
        @classmethod
        def _check(cls, value: str) -> str:
            raise ValueError(f"{value} is not a valid INS")

    with pytest.raises(ValidationError) as info:
        Person.model_validate({"ins": "279035121518989"})
    errors = intake.field_errors(info.value.errors(), prefix=("record",))
    assert [(e.pointer, e.message, e.code) for e in errors] == [("/record/ins", "invalid value", "value_error")]


def test_a_rule_over_an_object_never_quotes_its_personal_values() -> None:
    from gateway.services.intake import field_errors

    person = {"traits": {"family_name": "DUPONT", "birth_date": "1941-03-12"}, "identity_status": "qualifiee"}
    errors = [
        {"loc": ("person",), "type": "value_error", "msg": "Value error, DUPONT born 1941-03-12", "input": person},
        {
            "loc": ("person",),
            "type": "value_error",
            "msg": "Value error, 'qualifiee' requires the INS",
            "input": person,
        },
    ]
    quoted, plain = field_errors(errors)
    assert "DUPONT" not in quoted.message and "1941" not in quoted.message
    assert plain.message == "Value error, 'qualifiee' requires the INS"  # a closed vocabulary is not personal data


def test_a_batch_is_one_insert_and_settles_keys_within_itself(
    tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    """``store_many`` (the group commit's writer): one INSERT for the batch; a key seen earlier in the
    same batch or in the database is a replay (same body) or a conflict; a foreign ESSMS is refused
    alone; each stored submission has its audit event."""
    from sqlalchemy import event

    from gateway import audit

    def prepared(text: str, finess: str = tenant.finess) -> intake.Prepared:
        return intake.prepare(document_type="test-note", record_json=note(finess, text=text)["record"])

    with session_factory() as s:
        client_row = s.get(ApiClient, tenant.client_id)
        assert client_row is not None
    with session_factory() as session:  # a key stored before the batch
        [(earlier, created)] = intake.store_many(  # type: ignore[misc]
            session,
            [intake.StoreRequest(client_row, prepared("avant"), "known", "c0")],
            keyring=keyring,
        )
        session.commit()
    assert created
    with session_factory() as session:  # no Idempotency-Key in the whole batch (all NULL)
        outcomes = intake.store_many(
            session, [intake.StoreRequest(client_row, prepared("sans clé"), None, "c0")], keyring=keyring
        )
        session.commit()
    assert not isinstance(outcomes[0], Exception) and outcomes[0][1]
    outcomes_alone_id = outcomes[0][0].id

    def req(text: str, key: str | None, finess: str = tenant.finess) -> intake.StoreRequest:
        return intake.StoreRequest(client_row, prepared(text, finess), key, "c1")

    statements: list[str] = []
    engine = session_factory.kw["bind"]
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        with session_factory() as session:
            outcomes = intake.store_many(
                session,
                [
                    req("un", "k1"),
                    req("un", "k1"),  # same key, same body: the first one's answer
                    req("deux", "k1"),  # same key, another body: 409
                    req("trois", None),
                    req("quatre", "k4", finess="990000001"),  # not this tenant's ESSMS: 403
                    req("avant", "known"),  # stored before: replayed
                ],
                keyring=keyring,
            )
            session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    first, replayed, conflict, third, refused, known = outcomes
    assert not isinstance(first, Exception) and first[1]
    assert not isinstance(replayed, Exception) and replayed == (replayed[0], False)
    assert replayed[0].id == first[0].id
    assert isinstance(conflict, Conflict)
    assert not isinstance(third, Exception) and third[1]
    assert isinstance(refused, Forbidden)
    assert not isinstance(known, Exception) and known[0].id == earlier.id and not known[1]
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO SUBMISSIONS")]
    assert len(inserts) == 1, "the batch's submissions are one INSERT"
    # (on PostgreSQL the events' INSERT is in a CTE that moves the chain's head too)
    events = [s for s in statements if "INSERT INTO AUDIT_EVENTS" in s.upper()]
    assert len(events) == 1, "their audit events too"
    assert count_rows(session_factory) == (4, 4)
    received = {e.entity_id for e in audit_events(session_factory, action="received")}
    assert received == {earlier.id, outcomes_alone_id, first[0].id, third[0].id}
    with session_factory() as session:
        assert audit.verify(session).ok
        stored = session.get(Submission, first[0].id)
        assert stored is not None and stored.payload_ct != prepared("un").plaintext
        assert stored.request_hash == intake.canonical_hash("test-note", note(tenant.finess, text="un")["record"])


def test_the_postgresql_batch_insert_names_every_column_of_submissions() -> None:
    """``store_many``'s INSERT on PostgreSQL is written by hand (unnest): a column added to the
    model must be added there too."""
    import re

    sql = str(intake._PG_INSERT_UNNEST)
    listed = re.match(r"INSERT INTO submissions \(([^)]*)\)", sql)
    assert listed is not None
    assert [c.strip() for c in listed.group(1).split(",")] == [c.name for c in Submission.__table__.columns]
