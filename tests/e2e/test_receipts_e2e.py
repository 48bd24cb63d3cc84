"""Receipts end to end, with real processes: ``dui-gateway serve`` (embedded workers and inbound
sources), ``dui-gateway sandbox`` (signed webhooks, "accepted, receipt later"), and the MSSanté
mail sandbox (SMTP relay with client-certificate TLS + DSN, dovecot polled over IMAPS).

- a receipt-later webhook delivery goes ``sent`` → ``delivered`` through ``POST /inbound/webhook-receipts``;
- a duplicate receipt changes nothing;
- a receipt that never comes → ``unconfirmed`` after the destination's ``receipt_timeout_seconds``;
- a negative DSN (unknown mailbox) → ``failed`` with the relay's reason;
- ``/inbound`` refuses unsigned and hostile requests with a problem+json 4xx and stores nothing.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import SecretStr
from sqlalchemy import func, select

from connectors.sandbox.mail import MailSandbox, dovecot_available
from connectors.webhook.signing import new_secret, sign_headers
from gateway.security.clients import add_essms
from gateway.storage.db import make_sessionmaker, session_scope
from gateway.storage.models import InboundMessage, Receipt, Tenant
from mappings.record import luhn_ok
from tests.e2e.conftest import demo_records, require_dlu, with_finess
from tests.peers.gateway import Deployment, provision
from tests.peers.net import free_port, wait_http
from tests.peers.sandbox import SandboxClient, sandbox_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ESSMS_MAILBOX = "ehpad-e2e@ehpad-e2e.mssante.fr"
URGENCES = "urgences@ch-e2e.mssante.fr"
UNKNOWN = "inconnu@ch-e2e.mssante.fr"  # no mailbox at the relay: DSN failed 5.1.1
SOURCE = "webhook-receipts"


def finess(prefix: str) -> str:
    """A Luhn-valid fictitious FINESS starting with the 8 digits ``prefix``."""
    return next(prefix + str(k) for k in range(10) if luhn_ok(prefix + str(k)))


FINESS_LATER = finess("75990010")  # -> "hook": receipt later, delivered by the receipt
FINESS_NEVER = finess("75990011")  # -> "hook-short": receipt never comes, 2 s timeout
FINESS_MAIL = finess("75990012")  # -> "mss-urgences" + "mss-unknown"


@dataclass
class Stack:
    dep: Deployment
    api_url: str
    api_key: str
    sandbox: SandboxClient
    secret: str
    mail: MailSandbox

    def post(self, finess_number: str) -> str:
        record = with_finess(copy.deepcopy(demo_records()[0]), finess_number)
        record["person"]["local_id"] = f"E2E-RCPT-{uuid.uuid4().hex[:10]}"
        resp = requests.post(
            f"{self.api_url}/v1/submissions",
            json={"document_type": "dlu", "record": record},
            headers={"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": f"e2e-{uuid.uuid4()}"},
            timeout=30,
        )
        assert resp.status_code == 202, resp.text[:2000]
        return str(resp.json()["id"])

    def submission(self, sub_id: str) -> dict[str, Any]:
        resp = requests.get(
            f"{self.api_url}/v1/submissions/{sub_id}", headers={"Authorization": f"Bearer {self.api_key}"}, timeout=10
        )
        assert resp.status_code == 200, resp.text[:2000]
        data: dict[str, Any] = resp.json()
        return data

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 90) -> None:
        try:
            self.dep.wait_until(predicate, timeout=timeout, what=what)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\n{self.dep.logs()[-6000:]}") from None

    def wait_deliveries(self, sub_id: str, statuses: dict[str, str], timeout: float = 90) -> dict[str, Any]:
        """Until each named destination's delivery has the given status; returns the submission."""
        seen: dict[str, Any] = {}

        def done() -> bool:
            seen.update(self.submission(sub_id))
            got = {d["destination"]: d["status"] for d in seen.get("deliveries", [])}
            return all(got.get(name) == status for name, status in statuses.items())

        self.wait(f"deliveries {statuses}", done, timeout)
        return seen

    def count(self, model: Any) -> int:
        with make_sessionmaker(self.dep.engine)() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _routing(sandbox_url: str, secret_file: Path, mail: dict[str, Any]) -> dict[str, Any]:
    def hook(path: str, timeout_s: float) -> dict[str, Any]:
        return {
            "connector": "webhook",
            "category": "webhook",
            "settings": {"url": f"{sandbox_url}/{path}", "timeout": 10, "signing_secrets": [f"file:{secret_file}"]},
            "receipt_timeout_seconds": timeout_s,
        }

    relay = {
        "host": "127.0.0.1",
        "port": mail["smtp"]["port"],
        "tls": "starttls",
        "ca_bundle": mail["ca_bundle"],
        "timeout": 10,
        "sender": ESSMS_MAILBOX,
        "request_mdn": False,
    }
    return {
        "destinations": {
            "hook": hook("hook", 120),
            "hook-short": hook("short", 2),
            "mss-urgences": {
                "connector": "mssante",
                "category": "mssante",
                "settings": {**relay, "recipients": [URGENCES]},
                "receipt_timeout_seconds": 120,
            },
            "mss-unknown": {
                "connector": "mssante",
                "category": "mssante",
                "settings": {**relay, "recipients": [UNKNOWN]},
                "receipt_timeout_seconds": 120,
            },
        },
        "rules": [
            {"name": "later", "essms": [FINESS_LATER], "document_types": ["dlu"], "destinations": ["hook"]},
            {"name": "never", "essms": [FINESS_NEVER], "document_types": ["dlu"], "destinations": ["hook-short"]},
            {
                "name": "mail",
                "essms": [FINESS_MAIL],
                "document_types": ["dlu"],
                "destinations": ["mss-urgences", "mss-unknown"],
            },
        ],
        "sources": {
            SOURCE: {
                "source": "webhook-receipts",
                "tenant": "e2e",
                "destinations": ["hook", "hook-short"],
                "settings": {"signing_secrets": [f"file:{secret_file}"]},
            },
            "mssante-imap": {
                "source": "mssante-imap",
                "tenant": "e2e",
                "destinations": ["mss-urgences", "mss-unknown"],
                "settings": {
                    "host": "127.0.0.1",
                    "port": mail["imap"]["imaps_port"],
                    "tls": "implicit",
                    "ca_bundle": mail["ca_bundle"],
                    "essms_finess": FINESS_MAIL,
                    "client_certificate_file": mail["essms"]["certificate"],
                    "client_key_file": mail["essms"]["private_key"],
                    "poll_seconds": 0.5,
                    "timeout": 10,
                },
            },
        },
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kit_dir: Path) -> Iterator[Stack]:
    require_dlu()
    if not dovecot_available():
        pytest.skip("dovecot is not installed (scripts/install-test-deps.sh)")
    root = tmp_path_factory.mktemp("receipts-e2e")
    mail = MailSandbox(root / "mail", [URGENCES], essms=ESSMS_MAILBOX).start()
    dep = Deployment.create(root / "deployment")
    try:
        secret_file = root / "webhook-secret"
        secret = new_secret()
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        info = mail.info()
        credentials = root / "credentials.json"
        credentials.write_text(
            json.dumps(
                {
                    "credentials": [
                        {
                            "tenant": "e2e",
                            "essms": "*",
                            "purpose": "mssante",
                            "certificate": f"file:{info['essms']['certificate']}",
                            "private_key": f"file:{info['essms']['private_key']}",
                            "attributes": {"mailbox": ESSMS_MAILBOX},
                        }
                    ]
                }
            )
        )
        dep.env["DUI_GATEWAY_CREDENTIALS_FILE"] = str(credentials)
        dep.migrate()
        prov = provision(dep.db_url, finess=FINESS_LATER)
        with session_scope(make_sessionmaker(dep.engine)) as session:
            for number in (FINESS_NEVER, FINESS_MAIL):
                add_essms(session, tenant_id=prov.tenant_id, finess=number, name=f"ESSMS {number}", category="500")
            assert session.scalar(select(Tenant.code).where(Tenant.id == prov.tenant_id)) == "e2e"
        api_port = free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        with sandbox_process(root, secret_refs=[f"file:{secret_file}"], receipt_url=f"{api_url}/inbound/{SOURCE}") as (
            _proc,
            sandbox,
        ):
            dep.write_routing(_routing(sandbox.url, secret_file, info))
            api = dep.spawn("api", "serve", "--port", str(api_port), env={"DUI_GATEWAY_EMBEDDED_WORKER": "true"})
            wait_http(f"{api_url}/healthz", alive=api.alive, timeout=60)
            yield Stack(dep=dep, api_url=api_url, api_key=prov.api_key, sandbox=sandbox, secret=secret, mail=mail)
    finally:
        dep.close()
        mail.stop()


def _receipts(delivery: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(r["kind"], r["outcome"], r["applied"]) for r in delivery["receipts"]]


def _delivery(sub: dict[str, Any], destination: str) -> dict[str, Any]:
    return next(d for d in sub["deliveries"] if d["destination"] == destination)


def test_receipt_later_becomes_delivered_and_a_duplicate_changes_nothing(stack: Stack) -> None:
    stack.sandbox.control(reset=True, receipt_later=1, receipt_delay=1.0)
    sub_id = stack.post(FINESS_LATER)
    sub = stack.wait_deliveries(sub_id, {"hook": "delivered"})
    hook = _delivery(sub, "hook")
    assert sub["status"] == "delivered"
    # the peer answered 202 "receipt later": the delivery was sent first, delivered by the receipt
    assert [r["status"] for r in stack.sandbox.accepted() if r["path"] == "/hook"] == [202]
    assert hook["sent_at"] and hook["delivered_at"] and hook["sent_at"] < hook["delivered_at"]
    assert _receipts(hook) == [("webhook-receipt", "delivered", True)]
    sent = [r for r in stack.sandbox.receipts() if r["state"] == "sent"]
    assert len(sent) == 1 and sent[0]["last_status"] == 202
    inbound_before, receipts_before = stack.count(InboundMessage), stack.count(Receipt)

    # the sandbox sends the same receipt again (same webhook-id and body)
    stack.sandbox.control(receipt_duplicate=sent[0]["receipt_id"])
    stack.wait("duplicate receipt sent", lambda: sum(r["state"] == "sent" for r in stack.sandbox.receipts()) == 2)
    assert [r["last_status"] for r in stack.sandbox.receipts()] == [202, 202]
    time.sleep(1.0)  # give the workers a chance to (wrongly) act on it
    assert (stack.count(InboundMessage), stack.count(Receipt)) == (inbound_before, receipts_before)
    after = _delivery(stack.submission(sub_id), "hook")
    assert after["status"] == "delivered" and _receipts(after) == _receipts(hook)


def test_receipt_that_never_comes_leaves_the_delivery_unconfirmed(stack: Stack) -> None:
    # the receipt goes to a port where nothing listens, once: it is lost
    stack.sandbox.control(
        reset=True, receipt_later=1, receipt_delay=0, receipt_url="http://127.0.0.1:9/nowhere", receipt_retries=0
    )
    sub_id = stack.post(FINESS_NEVER)
    sub = stack.wait_deliveries(sub_id, {"hook-short": "unconfirmed"}, timeout=60)
    stack.sandbox.control(reset=True)
    short = _delivery(sub, "hook-short")
    assert [r["status"] for r in stack.sandbox.accepted() if r["path"] == "/short"] == [202]
    assert short["sent_at"] and short["receipts"] == []
    assert "no receipt" in (short["last_error"] or "")
    assert sub["status"] == "failed"  # nothing was confirmed delivered
    assert [r["state"] for r in stack.sandbox.receipts() if r["url"].endswith("/nowhere")] == ["undelivered"]


def test_negative_dsn_fails_the_delivery_with_the_relay_reason(stack: Stack) -> None:
    sub_id = stack.post(FINESS_MAIL)
    sub = stack.wait_deliveries(sub_id, {"mss-urgences": "delivered", "mss-unknown": "failed"})
    assert sub["status"] == "partially_failed"
    ok, ko = _delivery(sub, "mss-urgences"), _delivery(sub, "mss-unknown")
    assert _receipts(ok) == [("dsn", "delivered", True)]
    assert _receipts(ko) == [("dsn", "failed", True)]
    assert "5.1.1" in (ko["receipts"][0]["reason"] or "")
    assert (ko["last_error"] or "").startswith("dsn:") and "5.1.1" in ko["last_error"]
    # both were accepted by the relay (250, sent) with the ESSMS's certificate from the credentials file
    relay = stack.mail.relay
    assert relay is not None
    mids = {a.message_id for a in relay.accepted if UNKNOWN in a.rcpt_tos or URGENCES in a.rcpt_tos}
    assert len(mids) == 2
    assert all(ESSMS_MAILBOX in a.client_cert_subject for a in relay.accepted)


# -- /inbound refuses what it cannot trust, stores nothing ---------------------------------------
def _signed(stack: Stack, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        **sign_headers([SecretStr(stack.secret)], msg_id=f"msg_{uuid.uuid4().hex}", body=body),
    }


def _receipt_body() -> bytes:
    return json.dumps(
        {"type": "delivery.receipt", "idempotency_key": "nobody", "receipt_id": "r1", "outcome": "delivered"}
    ).encode()


HOSTILE: dict[str, tuple[Callable[[Stack], tuple[bytes, dict[str, str]]], int]] = {
    "unsigned": (lambda s: (_receipt_body(), {"Content-Type": "application/json"}), 401),
    "wrong signature": (
        lambda s: (
            _receipt_body(),
            {**_signed(s, _receipt_body()), "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        ),
        401,
    ),
    "signed for another body": (lambda s: (_receipt_body() + b" ", _signed(s, _receipt_body())), 401),
    "10 MB body": (lambda s: (b"[" + b"1," * (5 * 1024 * 1024) + b"1]", {"Content-Type": "application/json"}), 413),
    "deep JSON": (lambda s: (b"[" * 20_000 + b"]" * 20_000, {"Content-Type": "application/json"}), 401),
    "bad UTF-8": (lambda s: (b'{"type": "delivery.receipt\xff\xfe"}', {"Content-Type": "application/json"}), 401),
    "bad UTF-8 header": (
        lambda s: (_receipt_body(), {**_signed(s, _receipt_body()), "webhook-id": "msg_\xe9\xff"}),
        401,
    ),
    "malformed timestamp": (
        lambda s: (_receipt_body(), {**_signed(s, _receipt_body()), "webhook-timestamp": "soon"}),
        400,
    ),
    "not JSON media type": (lambda s: (_receipt_body(), {"Content-Type": "text/plain"}), 415),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_inbound_refuses_with_a_problem_and_stores_nothing(stack: Stack, case: str) -> None:
    make, expected = HOSTILE[case]
    body, headers = make(stack)
    before = stack.count(InboundMessage)
    resp = requests.post(f"{stack.api_url}/inbound/{SOURCE}", data=body, headers=headers, timeout=60)
    assert resp.status_code == expected, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert problem["status"] == expected and problem["title"]
    assert "delivery.receipt" not in json.dumps(problem)  # the content is never echoed
    assert stack.count(InboundMessage) == before


def test_inbound_refuses_a_10_mb_chunked_body(stack: Stack) -> None:
    """No Content-Length to refuse up front: the limit is counted while reading."""
    before = stack.count(InboundMessage)

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(10 * 1024):
            yield b"1," * 512
        yield b"1]"

    resp = requests.post(
        f"{stack.api_url}/inbound/{SOURCE}", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert resp.status_code == 413, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert stack.count(InboundMessage) == before


def test_inbound_unknown_source_is_a_problem(stack: Stack) -> None:
    resp = requests.post(f"{stack.api_url}/inbound/nope", data=_receipt_body(), timeout=10)
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_signed_but_malformed_receipt_is_kept_with_a_note_and_moves_nothing(stack: Stack) -> None:
    """A peer holding the secret is trusted to speak, not to be right: its message is stored
    (it was signed) and ignored with a note."""
    body = b"[" * 50 + b"]" * 50
    before = stack.count(Receipt)
    resp = requests.post(f"{stack.api_url}/inbound/{SOURCE}", data=body, headers=_signed(stack, body), timeout=10)
    assert resp.status_code == 202, resp.text
    stored_id = resp.json()["id"]

    def ignored() -> bool:
        with make_sessionmaker(stack.dep.engine)() as session:
            row = session.get(InboundMessage, stored_id)
            return row is not None and row.status == "ignored"

    stack.wait("malformed receipt ignored", ignored, timeout=30)
    with make_sessionmaker(stack.dep.engine)() as session:
        row = session.get(InboundMessage, stored_id)
        assert row is not None and "nests deeper" in (row.note or "")
    assert stack.count(Receipt) == before
