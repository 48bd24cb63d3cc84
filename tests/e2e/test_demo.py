"""``dui-gateway demo --exit-after-demo``: the README's "run the gateway" path, end to end."""

from __future__ import annotations

import base64
import email
import io
import json
import re
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from connectors.sandbox.dmp.store import DmpStore
from connectors.sandbox.mail import dovecot_available
from connectors.sandbox.receiver import ReceiverStore
from gateway.demo import DEMO_MAILBOXES
from gateway.storage.db import make_engine, make_sessionmaker
from gateway.storage.models import Delivery, Submission
from tests.e2e.conftest import require_dlu
from tests.peers.process import ManagedProcess, dui_gateway_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _deliveries(var: Path) -> list[tuple[int, Delivery]]:
    """(posting rank of the submission, delivery) with attempts and receipts loaded."""
    engine = make_engine(f"sqlite:///{var / 'dui-gateway.db'}")
    try:
        with make_sessionmaker(engine)() as session:
            subs = session.scalars(
                select(Submission)
                .order_by(Submission.created_at)
                .options(selectinload(Submission.deliveries).selectinload(Delivery.receipts))
            ).all()
            out = [(rank, d) for rank, s in enumerate(subs) for d in s.deliveries]
            for _rank, d in out:
                _ = list(d.receipts)
            session.expunge_all()
            return out
    finally:
        engine.dispose()


def _submissions(var: Path, document_type: str) -> list[tuple[str, list[tuple[str, str, str | None]]]]:
    """(status, [(destination, delivery status, remote id)]) of the submissions of ``document_type``."""
    engine = make_engine(f"sqlite:///{var / 'dui-gateway.db'}")
    try:
        with make_sessionmaker(engine)() as session:
            subs = session.scalars(
                select(Submission)
                .where(Submission.document_type == document_type)
                .options(selectinload(Submission.deliveries))
            ).all()
            return [(s.status, [(d.destination, d.status, d.remote_id) for d in s.deliveries]) for s in subs]
    finally:
        engine.dispose()


def _events(var: Path, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The inbound events the DUI vendor's webhook accepted, by event type."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    store = ReceiverStore(var / "sandbox.db")
    try:
        for row in rows:
            found = store.body(int(row["n"]))
            assert found is not None
            envelope = json.loads(found[0])
            assert envelope["document_type"] == "inbound-event"
            event = json.loads(base64.b64decode(envelope["renditions"][0]["content_base64"]))
            out[event["event_type"]].append(event)
    finally:
        store.close()
    return out


def _maildir(var: Path, address: str) -> list[bytes]:
    box = var / "mail" / "imap" / "mail" / address
    files = sorted([*(box / "new").glob("*"), *(box / "cur").glob("*")])
    return [f.read_bytes() for f in files]


@pytest.fixture
def var() -> Iterator[Path]:
    """The demo's var/ folder, outside pytest's 0700 tmp_path so that the unprivileged dovecot can
    keep the mailboxes there (the test reads them afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="dgw-demo-"))
    folder.chmod(0o755)
    try:
        yield folder / "var"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("with_mail", [True, False], ids=["mail", "no-mail"])
def test_demo_posts_documents_that_reach_the_sandbox(tmp_path: Path, kit_dir: Path, var: Path, with_mail: bool) -> None:
    """With dovecot the MSSanté part runs through the mail sandbox; without it (or with --no-mail)
    the demo says so and a webhook stands in, and the demo still settles."""
    require_dlu()
    proc = ManagedProcess(
        "demo",
        dui_gateway_cmd(
            "demo",
            "--exit-after-demo",
            "--port",
            "0",
            "--sandbox-port",
            "0",
            "--var-dir",
            str(var),
            "--timeout",
            "240",
            *([] if with_mail else ["--no-mail"]),
        ),
        log_path=tmp_path / "demo.log",
        env={"DUI_GATEWAY_PROFILE": "dev", "DUI_GATEWAY_DATABASE_URL": f"sqlite:///{var / 'dui-gateway.db'}"},
        cwd=tmp_path,
    )
    try:
        code = proc.proc.wait(timeout=300)
    finally:
        proc.stop()
    out = proc.output()
    assert code == 0, out
    for line in ("API docs", "/docs", "API key        dgw_", "/_received", "/inbound/webhook-receipts"):
        assert line in out, out
    console = re.search(r"console +(http://\S+/console) +\(dev only: user 'demo', password '([^']+)'", out)
    assert console, out
    assert (var / "demo-console-password").read_text().strip() == console.group(2)
    mail = with_mail and dovecot_available()
    if mail:
        assert "MSSanté relay" in out and "webhook-receipt delivered" in out and "dsn delivered" in out, out
    else:
        assert "MSSanté        skipped" in out, out

    store = ReceiverStore(var / "sandbox.db")
    try:
        rows = store.received()
        receipts = store.receipts()
    finally:
        store.close()
    accepted = [r for r in rows if r["outcome"] == "accepted"]
    # the demo asks the sandbox to fail the first two deliveries: they were retried
    assert [r["status"] for r in rows if r["outcome"] == "failed"] == [503, 503]
    # 01 (qualified INS) and 03 (its new version) go to the DMP; 02 (provisional identity) never
    # 04 (qualified INS, refused the DMP) never goes to a dmp-category destination either
    # the SI-SdO decision reached the DUI vendor's webhook as an event, and with the mail part the
    # DAC's answer too
    expected = sorted(["/dmp", "/dmp", "/dui-vendor"] + (["/dui-vendor"] if mail else ["/mssante"] * 4))
    assert sorted(r["path"] for r in accepted) == expected
    events = _events(var, [r for r in accepted if r["path"] == "/dui-vendor"])
    assert sorted(events) == (["mssante.message", "sdo.decision"] if mail else ["sdo.decision"])
    # one delivery answered "accepted, receipt later"; its signed receipt reached the gateway
    assert [r["status"] for r in accepted if r["receipt"] == "later"] == [202]
    assert [(r["state"], r["last_status"]) for r in receipts] == [("sent", 202)]
    # versions of one series arrive in order at each destination
    versions: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for r in accepted:
        for doc in r["documents"]:
            versions[(r["path"], doc["kind"], doc["set_id"])].append(doc["version"])
    assert all(v == sorted(v) for v in versions.values())
    assert any(v == [1, 2] for k, v in versions.items() if k[0] == "/dmp")
    # the API key file is private
    assert (var / "demo-api-key").stat().st_mode & 0o077 == 0

    # every delivery ended delivered, the receipt-later one through its webhook receipt
    deliveries = _deliveries(var)
    # the DMP simulator (mutual TLS, VIHF, XAdES, metadata rules) received 01, then 03 replacing
    # it; never 02 (provisional identity) nor 04 (refused the DMP); the API shows the DMP's ids
    dmp = [(rank, d) for rank, d in deliveries if d.destination == "dmp"]
    assert sorted(rank for rank, _d in dmp) == [0, 2]
    sim = DmpStore(var / "dmp-sandbox.db")
    try:
        cdas = [e for e in sim.entries() if e.type_code == "74207-2"]
    finally:
        sim.close()
    first, second = sorted(cdas, key=lambda e: e.replaces is not None)
    assert second.replaces == first.entry_uuid and first.status.endswith("Deprecated")
    assert {d.remote_id for _r, d in dmp} == {first.entry_uuid, second.entry_uuid}
    assert "DMP entry" in out and f"replaces {first.entry_uuid}" in out
    assert deliveries and all(d.status == "delivered" for _r, d in deliveries), [
        (d.destination, d.status, d.last_error) for _r, d in deliveries
    ]
    by_kind = {(rank, d.destination): sorted((r.kind, r.outcome) for r in d.receipts) for rank, d in deliveries}
    webhook_destinations = ("dmp-sandbox",) if mail else ("dmp-sandbox", "mssante-sandbox")
    hooks = [kinds for (_rank, dest), kinds in by_kind.items() if dest in webhook_destinations]
    assert sorted(hooks) == [[]] * (len(hooks) - 1) + [[("webhook-receipt", "delivered")]], (by_kind, out)

    # ViaTrajectoire: the decision published at the SI-SdO simulator was polled by the sdo source
    # and reached the DUI vendor as an sdo.decision event; the DUI's answers (agreement, then
    # status 47 "usager entré") were delivered to viatrajectoire and the simulator holds them
    (decision,) = events["sdo.decision"]
    assert decision["essms_finess"] == "759900004" and decision["payload"]["state"] == "active"
    national, id_decision = decision["series"], decision["payload"]["idDecision"]
    assert decision["payload"]["idNat_Decision"] == national
    assert f"SI-SdO  decision {id_decision} published for" in out, out
    assert "at the DUI vendor's webhook as an sdo.decision event" in out, out
    (status,) = _submissions(var, "sdo-status")
    (consent,) = _submissions(var, "sdo-consent")
    assert status[0] == consent[0] == "delivered", (status, consent)
    [(dest, state, task_ref)] = status[1]
    assert (dest, state) == ("viatrajectoire", "delivered") and task_ref and task_ref.startswith("Task/")
    assert consent[1][0][:2] == ("viatrajectoire", "delivered")
    held = json.loads((var / "sdo-sandbox" / "received.json").read_text())
    (task,) = [r for r in held if r["type"] == "Task"]
    assert f"Task/{task['id']}" == task_ref and task["owner"] == "759900004"
    inputs = {i["type"]["text"]: i for i in task["resource"]["input"]}
    assert inputs["statutESMS"]["valueCodeableConcept"]["coding"][0]["code"] == "47"  # usager entré
    assert inputs["idNat_Decision"]["valueIdentifier"]["value"] == national
    assert inputs["idDecision"]["valueIdentifier"]["value"] == id_decision
    (held_consent,) = [r for r in held if r["type"] == "Consent"]
    assert held_consent["resource"]["provision"]["data"][0]["reference"]["identifier"]["value"] == national
    assert f"SI-SdO  holds {task_ref} v1" in out and "statutESMS 47" in out, out
    # the ESSMS's SI-SdO credentials came from the credentials file the demo wrote, by reference
    credentials = (var / "credentials.yaml").read_text()
    assert "purpose: sdo" in credentials and "BEGIN" not in credentials
    if not mail:
        return
    # MSSanté: the qualified person's DLU (01) went to the emergency department and the DAC; the
    # relay's DSN (and the DAC software's MDN) came back through IMAP. The receipt that arrives
    # second is stored as information, maybe after the demo stopped: only the first is certain.
    assert by_kind[(0, "mssante-urgences")] == [("dsn", "delivered")]
    assert set(by_kind[(0, "mssante-dac")]) & {("dsn", "delivered"), ("mdn", "delivered")}
    mss = {key: kinds for key, kinds in by_kind.items() if key[1].startswith("mssante-")}
    assert len(mss) == 8  # 4 DLUs x 2 boxes
    assert all(kinds == [("dsn", "delivered")] for (_r, dest), kinds in mss.items() if dest == "mssante-urgences")
    assert all(
        set(kinds) & {("dsn", "delivered"), ("mdn", "delivered")}
        for (_r, dest), kinds in mss.items()
        if dest == "mssante-dac"
    )
    assert {kind for kinds in mss.values() for kind, _outcome in kinds} == {"dsn", "mdn"}
    # the DAC's answer (not a receipt) went to the DUI vendor as an mssante.message event, threaded
    # to the DLU message it answers
    (event,) = events["mssante.message"]
    assert event["source"] == "mssante-imap"
    assert event["payload"]["in_reply_to"] and event["payload"]["from"] == DEMO_MAILBOXES["dac"]
    assert [a["filename"] for a in event["payload"]["attachments"]] == ["compte-rendu.txt"]
    # the ESSMS's certificate came from the credentials file the demo wrote, by reference
    assert "certificate: file:" in credentials and "purpose: mssante" in credentials
    # what the mailboxes hold: one message per DLU, each with its IHE_XDM.ZIP
    for address in DEMO_MAILBOXES.values():
        messages = _maildir(var, address)
        assert len(messages) == 4, address
        for raw in messages:
            msg = email.message_from_bytes(raw, policy=policy.default)
            assert str(msg["Subject"]).startswith(("XDM/1.0/DDM", "Annule et remplace"))
            zips = [p for p in msg.iter_attachments() if p.get_filename() == "IHE_XDM.ZIP"]
            assert len(zips) == 1
            with zipfile.ZipFile(io.BytesIO(zips[0].get_content())) as archive:
                assert "IHE_XDM/SUBSET01/METADATA.XML" in archive.namelist()


def test_demo_without_dovecot_says_so_and_skips_the_mail_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No dovecot: the mail sandbox is not started and the demo gets the reason to print."""
    import connectors.sandbox.mail.sandbox as mail_sandbox
    from gateway.demo import _start_mail

    monkeypatch.setattr(mail_sandbox, "dovecot_available", lambda: False)
    sandbox, reason = _start_mail(tmp_path)
    assert sandbox is None
    assert "dovecot is not installed" in reason
    assert not (tmp_path / "mail" / "imap").exists()


@pytest.mark.parametrize("with_mail", [True, False], ids=["mail", "no-mail"])
def test_routing_document_merges_the_si_sdo_wiring(tmp_path: Path, with_mail: bool) -> None:
    """The SI-SdO simulator's wiring joins the demo routing: the DUI vendor's webhook exists in both
    modes, DLUs never go to ViaTrajectoire nor to the DUI vendor, no twin inbound-event rule."""
    from connectors.sandbox.sdo import start_sdo_sandbox
    from gateway.demo import DEMO_FINESS, DEMO_TENANT, credentials_document, routing_document
    from gateway.routing import parse_config

    mail = {
        "smtp": {"host": "127.0.0.1", "port": 2525},
        "imap": {"host": "127.0.0.1", "imaps_port": 9993},
        "ca_bundle": str(tmp_path / "ca.crt"),
        "essms": {"certificate": str(tmp_path / "essms.crt"), "private_key": str(tmp_path / "essms.key")},
    }
    box = start_sdo_sandbox([DEMO_FINESS])
    try:
        wiring = box.gateway_wiring(
            tenant=DEMO_TENANT, directory=tmp_path / "sdo", poll_seconds=1, dui_destination="dui-vendor"
        )
    finally:
        box.stop()
    secret = tmp_path / "secret"
    doc = routing_document("http://127.0.0.1:8787", secret, mail=mail if with_mail else None, sdo=wiring["routing"])
    config = parse_config(doc)
    assert {"dui-vendor", "viatrajectoire"} <= set(config.destinations)
    assert f"viatrajectoire-{DEMO_FINESS}" in doc["sources"]
    assert doc["sources"][f"viatrajectoire-{DEMO_FINESS}"]["settings"]["poll_seconds"] == 1
    by_type: dict[str, list[str]] = defaultdict(list)
    for rule in doc["rules"]:
        for doc_type in rule["document_types"]:
            by_type[doc_type].extend(rule["destinations"])
    assert by_type["inbound-event"] == ["dui-vendor"]
    assert by_type["sdo-status"] == by_type["sdo-consent"] == ["viatrajectoire"]
    assert not {"dui-vendor", "viatrajectoire"} & set(by_type["dlu"])
    creds = credentials_document(mail if with_mail else None, None, wiring["credentials"])["credentials"]
    (sdo,) = [c for c in creds if c["purpose"] == "sdo"]
    assert sdo["essms"] == DEMO_FINESS and str(sdo["password"]).startswith("file:")
