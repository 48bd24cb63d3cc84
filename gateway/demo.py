"""``dui-gateway demo``: the whole gateway on one machine, with documents visibly flowing.

1. migrate the embedded SQLite database under ``var/``;
2. start the sandbox HTTP receiver (a real loopback server, recording to ``var/sandbox.db``)
   and the MSSanté mail sandbox (``var/mail``: dev PKI, SMTP relay with client-certificate TLS
   and DSN, dovecot run unprivileged; :mod:`connectors.sandbox.mail`);
3. start the DMP simulator (mutual TLS, VIHF and XAdES checks, every metadata rule of the DMP;
   dev PKI in ``var/dmp-pki``, documents in ``var/dmp-sandbox.db``);
   write ``var/credentials.yaml`` (the ESSMS's DMP and MSSanté certificates, ``file:`` references
   into the dev PKIs) and ``var/routing.json``: DLUs of persons with a qualified INS who did not
   refuse the DMP go to ``dmp`` (the simulator: the new version replaces the first by RPLC) and
   to ``dmp-sandbox`` (a signed webhook to the receiver, category ``dmp``); every DLU goes to
   two MSSanté destinations through
   the real relay, an emergency department (``mssante-urgences``) and the ESSMS's DAC
   (``mssante-dac``); two inbound sources bring the receipts back: ``webhook-receipts`` (signed
   ``POST /inbound/webhook-receipts`` from the receiver) and ``mssante-imap`` (DSN/MDN polled
   from the ESSMS's mailbox). Without dovecot the MSSanté part is skipped, said so, and a
   ``mssante-sandbox`` webhook stands in. The SI-SdO (ViaTrajectoire PH) simulator runs too
   (:mod:`connectors.sandbox.sdo`, HTTPS on loopback, CA in ``var/sdo-sandbox``); its
   ``gateway_wiring()`` adds an ``sdo`` source polling it every second, the ``viatrajectoire``
   destination and the ESSMS's SI-SdO credentials (files under ``var/sdo``); inbound events go
   to the DUI vendor's webhook ``dui-vendor`` (``/dui-vendor`` on the receiver);
4. provision a demo tenant, its ESSMS and an API client (key kept in ``var/demo-api-key``);
5. start the API under uvicorn with in-process workers (and the inbound sources);
6. post the demo DLU records (``gateway/demo_data``) through the real HTTP API, after asking
   the receiver to fail the first two deliveries (503) so that retries show, and to answer the
   next one "accepted, receipt later";
7. print the URLs, the API key, what the receiver and the relay got, the receipts, and each
   delivery's way to ``delivered``;
8. with the mail part, have the DAC answer by mail: the answer reaches the DUI vendor's webhook
   (``dui-vendor``) as an ``mssante.message`` event;
9. ViaTrajectoire: publish an orientation decision for the demo person at the SI-SdO simulator;
   the ``sdo`` source polls it and it reaches ``dui-vendor`` as an ``sdo.decision`` event (the
   time it took is printed); the DUI answers through the API with the person's agreement
   (``sdo-consent``) and the status "admitted" (``sdo-status`` 47); both are delivered to
   ``viatrajectoire`` and the demo prints the Consent and the Task the simulator holds.
   Ctrl-C stops everything.

The demo posts only document types the gateway really ships: without ``mappings.dlu`` it
starts and says there is nothing to post.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import requests
import yaml
from sqlalchemy import select

from connectors.sandbox import SandboxReceiver
from gateway.settings import Settings

__all__ = [
    "DEMO_FINESS",
    "DEMO_MAILBOXES",
    "DEMO_TENANT",
    "ESSMS_MAILBOX",
    "credentials_document",
    "demo_records",
    "installed_kit",
    "routing_document",
    "run_demo",
]

DEMO_TENANT = "demo"
DEMO_FINESS = "759900004"  # fictitious, Luhn-valid; matches gateway/demo_data/*.json
# fictitious MSSanté addresses (the sandbox relay delivers them into its own dovecot)
ESSMS_MAILBOX = "ehpad-tilleuls@ehpad-tilleuls.mssante.fr"
DEMO_MAILBOXES = {"urgences": "urgences@ch-demo.mssante.fr", "dac": "dac75@dac-demo.mssante.fr"}
RECEIPT_SOURCE = "webhook-receipts"
TERMINAL_SUBMISSION = frozenset({"delivered", "partially_failed", "failed", "rejected", "cancelled"})
SUBMISSIONS_PATH = "/v1/submissions"
SDO_POLL_SECONDS = 1.0  # the demo's sdo source polls the SI-SdO simulator every second


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def installed_kit(var_dir: Path) -> Path | None:
    """``var_dir/cisis-kit`` when ``dui-gateway kit install`` completed there (its marker is written
    last), else None: the demo then uses ``CISIS_KIT_DIR`` as every other command does."""
    kit = var_dir / "cisis-kit"
    return kit if (kit / ".dui-kit.json").is_file() else None


def demo_records() -> list[tuple[str, str, dict[str, Any]]]:
    """(file name, document type, record) of each demo record, in posting order."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    folder = resources.files("gateway.demo_data")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            doc_type = entry.name.split("-")[1]  # "01-dlu-....json" -> "dlu"
            out.append((entry.name, doc_type, json.loads(entry.read_text(encoding="utf-8"))))
    return out


def routing_document(
    sandbox_url: str,
    secret_file: Path,
    *,
    mail: Mapping[str, Any] | None = None,
    dmp: Mapping[str, Any] | None = None,
    sdo: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo routing file.

    With ``dmp`` (the DMP simulator's ``iti41_url``, ``iti18_url``, ``ca_bundle``), DLUs of
    persons with a qualified INS who did not refuse the DMP also go to ``dmp`` (connector ``dmp``:
    XDS.b ITI-41 over mutual TLS with the ESSMS's certificate, VIHF, replacement by RPLC).

    DLUs go to ``dmp-sandbox`` (signed webhook on the receiver, category ``dmp``) and, with the
    mail sandbox's ``info()`` as ``mail``, to ``mssante-urgences`` and ``mssante-dac`` through its
    relay (else to a ``mssante-sandbox`` webhook). Receipts come back through the sources
    ``webhook-receipts`` (same secret as the webhooks) and ``mssante-imap``. Inbound events (the
    DAC's messages, the SI-SdO's decisions) go to the DUI vendor's signed webhook ``dui-vendor``.

    With ``sdo`` (the ``routing`` part of the SI-SdO simulator's ``gateway_wiring()``), its
    ``sdo`` source, its ``viatrajectoire`` destination and its rules (``sdo-status`` and
    ``sdo-consent`` to ``viatrajectoire``, ``inbound-event`` to ``dui-vendor``) are merged in.
    """

    def webhook(path: str) -> dict[str, Any]:
        return {
            "url": f"{sandbox_url}{path}",
            "health_url": f"{sandbox_url}/_health",
            "timeout": 10,
            "signing_secrets": [f"file:{secret_file}"],
        }

    destinations: dict[str, Any] = {
        "dmp-sandbox": {
            "connector": "webhook",
            "category": "dmp",
            "settings": webhook("/dmp"),
            "receipt_timeout_seconds": 60,
        },
    }
    if dmp is not None:
        destinations["dmp"] = {
            "connector": "dmp",
            "category": "dmp",
            "settings": {
                "iti41_url": dmp["iti41_url"],
                "iti18_url": dmp["iti18_url"],
                "ca_bundle": str(dmp["ca_bundle"]),
                "timeout": 15,
            },
        }
    sources: dict[str, Any] = {}
    if mail is None:
        destinations["mssante-sandbox"] = {
            "connector": "webhook",
            "category": "mssante",
            "settings": webhook("/mssante"),
            "receipt_timeout_seconds": 60,
        }
    else:
        relay = {
            "host": mail["smtp"]["host"],
            "port": mail["smtp"]["port"],
            "tls": "starttls",
            "ca_bundle": mail["ca_bundle"],
            "timeout": 10,
            "sender": ESSMS_MAILBOX,
            "nil": "NIL-DEMO-0001",
            "application_name": "dui-gateway (démo)",
            "contact": "support@dui-gateway.invalid",
        }
        destinations["mssante-urgences"] = {
            "connector": "mssante",
            "category": "mssante",
            "settings": {**relay, "recipients": [DEMO_MAILBOXES["urgences"]]},
            "receipt_timeout_seconds": 60,
        }
        destinations["mssante-dac"] = {
            "connector": "mssante",
            "category": "mssante",
            "settings": {**relay, "recipients_by_finess": {DEMO_FINESS: [DEMO_MAILBOXES["dac"]]}},
            "receipt_timeout_seconds": 60,
        }
        sources["mssante-imap"] = {
            "source": "mssante-imap",
            "tenant": DEMO_TENANT,
            "destinations": ["mssante-urgences", "mssante-dac"],
            "settings": {
                "host": mail["imap"]["host"],
                "port": mail["imap"]["imaps_port"],
                "tls": "implicit",
                "ca_bundle": mail["ca_bundle"],
                "essms_finess": DEMO_FINESS,
                # no password: SASL EXTERNAL with the ESSMS's certificate (its CN is the login),
                # which the gateway hands to the source from var/credentials.yaml (purpose mssante)
                "poll_seconds": 1,
                "timeout": 10,
            },
        }
    dlu_destinations = list(destinations)
    # what the mailbox receives that is not a receipt (a DAC answering) and the SI-SdO's decisions
    # go to the DUI vendor, with or without the mail part
    destinations["dui-vendor"] = {"connector": "webhook", "category": "webhook", "settings": webhook("/dui-vendor")}
    webhooks = [name for name, d in destinations.items() if d["connector"] == "webhook"]
    sources[RECEIPT_SOURCE] = {
        "source": "webhook-receipts",
        "tenant": DEMO_TENANT,
        "destinations": webhooks,
        "settings": {"signing_secrets": [f"file:{secret_file}"]},
    }
    rules: list[dict[str, Any]] = [
        {"name": "DLU to the sandbox destinations", "document_types": ["dlu"], "destinations": dlu_destinations},
        {
            "name": "inbound events (MSSanté messages, SI-SdO decisions) to the DUI vendor",
            "document_types": ["inbound-event"],
            "destinations": ["dui-vendor"],
        },
    ]
    if sdo is not None:
        clashes = (set(sdo.get("destinations") or {}) & set(destinations)) | (
            set(sdo.get("sources") or {}) & set(sources)
        )
        if clashes:
            raise ValueError(f"the SI-SdO wiring reuses the demo's names: {', '.join(sorted(clashes))}")
        destinations.update(sdo.get("destinations") or {})
        sources.update(sdo.get("sources") or {})
        covered = [(sorted(r["document_types"]), sorted(r["destinations"])) for r in rules]
        for rule in sdo.get("rules") or []:
            if (sorted(rule["document_types"]), sorted(rule["destinations"])) not in covered:  # no twin rules
                rules.append({"name": "the ESSMS's answers to ViaTrajectoire (SI-SdO)", **rule})
    return {"destinations": destinations, "rules": rules, "sources": sources}


def credentials_document(
    mail: Mapping[str, Any] | None,
    dmp: Mapping[str, Any] | None = None,
    sdo: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The demo ESSMS's credentials: ``file:`` references to the sandboxes' dev PKIs, never inline.

    ``sdo``: the ``credentials`` entries of the SI-SdO simulator's ``gateway_wiring()`` (purpose
    ``sdo``: certificate, key and OAuth client, also by ``file:`` reference)."""
    entries: list[dict[str, Any]] = []
    if mail is not None:
        entries.append(
            {
                "tenant": DEMO_TENANT,
                "essms": DEMO_FINESS,
                "purpose": "mssante",
                "certificate": f"file:{mail['essms']['certificate']}",
                "private_key": f"file:{mail['essms']['private_key']}",
                "attributes": {"mailbox": ESSMS_MAILBOX},
            }
        )
    if dmp is not None:
        entries.append(
            {
                "tenant": DEMO_TENANT,
                "essms": DEMO_FINESS,
                "purpose": "dmp",
                "certificate": f"file:{dmp['client_cert']}",
                "private_key": f"file:{dmp['client_key']}",
                "attributes": dict(dmp["vihf"]),  # VIHF subject and role (not secret)
            }
        )
    entries.extend(dict(entry) for entry in sdo or [])
    return {"credentials": entries}


def _webhook_secret(path: Path) -> Path:
    """The demo's webhook signing secret file (created once, 0600)."""
    from connectors.webhook.signing import new_secret

    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(new_secret() + "\n", encoding="ascii")
    return path


def provision(settings: Settings, key_file: Path) -> str:
    """Demo tenant + ESSMS + API client (idempotent); returns the API key."""
    from gateway.security.clients import add_essms, authenticate, create_api_client, create_tenant
    from gateway.storage.db import make_engine, make_sessionmaker, session_scope
    from gateway.storage.models import Essms, Tenant

    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            tenant = session.scalar(select(Tenant).where(Tenant.code == DEMO_TENANT))
            if tenant is None:
                tenant = create_tenant(session, code=DEMO_TENANT, name="Organisme gestionnaire de démonstration")
            if session.scalar(select(Essms.id).where(Essms.finess == DEMO_FINESS)) is None:
                add_essms(
                    session, tenant_id=tenant.id, finess=DEMO_FINESS, name="EHPAD Les Tilleuls (démo)", category="500"
                )
            if key_file.exists():
                key = key_file.read_text(encoding="ascii").strip()
                if authenticate(session, key) is not None:
                    return key
            _client, key = create_api_client(session, tenant_id=tenant.id, name="DUI de démonstration")
        key_file.write_text(key + "\n", encoding="ascii")
        key_file.chmod(0o600)
        return key
    finally:
        engine.dispose()


DEMO_CONSOLE_USER = "demo"


def provision_console_user(settings: Settings, password_file: Path) -> tuple[str, str]:
    """The demo's console user (dev only): operator and administrator of the demo tenant.

    Its password is random, kept in ``password_file`` (mode 0600) and reused on the next run.
    """
    import secrets as _secrets

    from gateway.console import accounts
    from gateway.storage.db import make_engine, make_sessionmaker, session_scope

    if settings.profile != "dev":
        raise RuntimeError("the demo console user is for the dev profile only")
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            user = accounts.find_user(session, DEMO_CONSOLE_USER)
            if password_file.exists():
                password = password_file.read_text(encoding="ascii").strip()
            else:
                password = _secrets.token_urlsafe(12)
                password_file.write_text(password + "\n", encoding="ascii")
                password_file.chmod(0o600)
            if user is None:
                user = accounts.create_user(
                    session,
                    username=DEMO_CONSOLE_USER,
                    display_name="Démo (opératrice)",
                    password=password,
                    actor="demo",
                )
            else:
                accounts.set_password(session, user=user, password=password, actor="demo")
            for role in ("operateur", "administrateur"):
                accounts.grant_role(session, user=user, tenant=DEMO_TENANT, role=role, actor="demo")
        return DEMO_CONSOLE_USER, password
    finally:
        engine.dispose()


@dataclass
class DemoRun:
    """What the demo posted and saw; filled by the feeder thread."""

    api_url: str
    api_key: str
    receiver: SandboxReceiver
    settings: Settings
    mail: Any = None  # connectors.sandbox.mail.MailSandbox when it runs
    dmp: Any = None  # connectors.sandbox.dmp.DmpSimulator
    sdo: Any = None  # connectors.sandbox.sdo.SdoSandbox (the SI-SdO simulator)
    sdo_posted: list[tuple[str, str]] = field(default_factory=list)  # (document type, submission id)
    sdo_snapshot: Path | None = None  # where the demo copies what the SI-SdO simulator holds
    posted: list[tuple[str, str]] = field(default_factory=list)  # (file name, submission id)
    statuses: dict[str, str] = field(default_factory=dict)
    deliveries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # submission id -> deliveries
    seen_deliveries: dict[str, tuple[str, int]] = field(default_factory=dict)  # delivery id -> (status, receipts)
    seen_received: int = 0
    seen_receipts: int = 0
    seen_relay: tuple[int, int, int] = (0, 0, 0)  # accepted, DSNs, MDNs
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def post_all(self) -> None:
        for name, doc_type, record in demo_records():
            resp = requests.post(
                f"{self.api_url}{SUBMISSIONS_PATH}",
                json={"document_type": doc_type, "record": record},
                headers={**self._headers(), "Idempotency-Key": f"demo-{uuid.uuid4()}"},
                timeout=30,
            )
            if resp.status_code != 202:
                raise RuntimeError(f"posting {name} answered HTTP {resp.status_code}: {resp.text[:500]}")
            sub_id = str(resp.json()["id"])
            self.posted.append((name, sub_id))
            print(f"  posted {name:<40} -> submission {sub_id}", flush=True)

    def _name(self, sub_id: str) -> str:
        return next((n.split("-", 1)[0] for n, s in self.posted if s == sub_id), "?")

    def poll(self) -> bool:
        """Refresh statuses (printing each delivery's changes); True when every submission is settled."""
        for _name, sub_id in self.posted:
            resp = requests.get(f"{self.api_url}{SUBMISSIONS_PATH}/{sub_id}", headers=self._headers(), timeout=10)
            if resp.status_code != 200:
                continue
            body = resp.json()
            self.statuses[sub_id] = str(body["status"])
            self.deliveries[sub_id] = list(body.get("deliveries") or [])
            for d in self.deliveries[sub_id]:
                state = (str(d["status"]), len(d.get("receipts") or []))
                if self.seen_deliveries.get(d["id"]) == state:
                    continue
                self.seen_deliveries[d["id"]] = state
                print(f"  gateway    DLU {self._name(sub_id)} -> {d['destination']:<17} {_describe(d)}", flush=True)
        return all(self.statuses.get(s) in TERMINAL_SUBMISSION for _n, s in self.posted)

    def print_peers(self) -> None:
        """What the receiver and the mail relay got or sent since the last call."""
        lines: list[tuple[str, str]] = []  # (when, line): requests and receipts in time order
        for row in self.receiver.store.received(since=self.seen_received):
            docs = ", ".join(f"{d['kind']} v{d['version']}" for d in row["documents"]) or "-"
            later = "  (receipt later)" if row.get("receipt") == "later" and row["outcome"] == "accepted" else ""
            line = f"  sandbox <- {row['method']} {row['path']:<10} {row['status']} {row['outcome']:<9} [{docs}]{later}"
            lines.append((str(row["received_at"]), line))
            self.seen_received = max(self.seen_received, int(row["n"]))
        for receipt in self.receiver.store.receipts():
            if receipt["state"] == "scheduled" or int(receipt["n"]) <= self.seen_receipts:
                continue
            self.seen_receipts = int(receipt["n"])
            line = (
                f"  sandbox -> POST /inbound/{RECEIPT_SOURCE} signed delivery.receipt {receipt['outcome']}"
                f" (HTTP {receipt['last_status']}, {receipt['state']})"
            )
            lines.append((str(receipt["sent_at"] or ""), line))
        for _when, line in sorted(lines, key=lambda item: item[0]):
            print(line, flush=True)
        relay = self.mail.relay if self.mail is not None else None
        if relay is None:
            return
        with relay.lock:
            accepted, dsns, mdns = list(relay.accepted), list(relay.dsns), list(relay.mdns)
        n_acc, n_dsn, n_mdn = self.seen_relay
        for item in accepted[n_acc:]:
            if item.mail_from.lower() == ESSMS_MAILBOX:
                cn = item.client_cert_subject.rsplit("commonName=", 1)[-1]
                how = f"client certificate CN={cn}, {len(item.content)} bytes"
                how += ", IHE_XDM.ZIP" if b"IHE_XDM.ZIP" in item.content else ""
            else:
                how = f"from another MSSanté client, {len(item.content)} bytes"
            print(f"  relay   <- {item.mail_from} -> {', '.join(item.rcpt_tos)}: 250 ({how})", flush=True)
        for report in dsns[n_dsn:]:
            print(f"  relay   -> DSN into {ESSMS_MAILBOX} ({_report_actions(report)})", flush=True)
        for report in mdns[n_mdn:]:
            print(f"  dac     -> MDN into {ESSMS_MAILBOX} ({_report_actions(report)})", flush=True)
        self.seen_relay = (len(accepted), len(dsns), len(mdns))


def _describe(delivery: Mapping[str, Any]) -> str:
    status = str(delivery["status"])
    receipts = list(delivery.get("receipts") or [])
    if status == "sent":
        return "sent (accepted by the peer, waiting for its receipt)"
    if receipts:
        kinds = ", ".join(f"{r['kind']} {r['outcome']}" for r in receipts)
        return f"{status} (receipts: {kinds})"
    if status == "pending" and delivery.get("last_error"):
        return f"pending (will retry: {str(delivery['last_error'])[:60]})"
    if status == "delivered" and delivery.get("remote_id"):
        return f"delivered (the peer's id: {delivery['remote_id']})"
    return status


def _report_actions(raw: bytes) -> str:
    """The Action / Disposition fields of a DSN or MDN, for the demo's lines."""
    import re

    found = re.findall(rb"^(?:Action|Disposition):\s*([^\r\n]+)", raw, flags=re.MULTILINE)
    return ", ".join(sorted({f.decode("ascii", "replace").strip() for f in found})) or "report"


def _feed(run: DemoRun, server: Any, *, exit_after_demo: bool, timeout: float) -> None:
    try:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        # what an earlier run left in var/sandbox.db is not printed again
        run.seen_received = max((int(r["n"]) for r in run.receiver.store.received()), default=0)
        run.seen_receipts = max((int(r["n"]) for r in run.receiver.store.receipts()), default=0)
        records = demo_records()
        gate = _gate_problems(run)
        if not records or _missing_document_types(records):
            print("No demo document type available yet (mappings.dlu missing): nothing posted.", flush=True)
        elif gate:
            run.error = "the conformance gate cannot run, documents would wait forever: " + "; ".join(gate)
            print(
                run.error + "\n  run `dui-gateway kit install` (the pinned ANS kit into var/cisis-kit), or point"
                " CISIS_KIT_DIR at a copy of the kit, and start again",
                flush=True,
            )
            return
        else:
            run.receiver.store.control({"reset": True})
            run.receiver.store.control({"fail_next": 2, "status": 503})
            run.receiver.store.control({"receipt_later": 1, "receipt_delay": 1.5})
            print(
                "Sandbox asked to fail the first 2 deliveries with 503 (watch the retries), then to answer the next"
                " one 'accepted, receipt later' and post its signed receipt to the gateway.",
                flush=True,
            )
            run.post_all()
        deadline = time.monotonic() + timeout
        settled = False
        while time.monotonic() < deadline and not server.should_exit:
            run.print_peers()
            if run.poll():
                settled = True
                break
            time.sleep(0.5)
        run.print_peers()
        _summary(run)
        if settled and run.mail is not None and run.posted:
            settled = _dac_answers(run, server, deadline=time.monotonic() + timeout)
        if settled and run.sdo is not None and not server.should_exit:
            _viatrajectoire(run, server, deadline=time.monotonic() + timeout)
        if not settled:
            run.error = f"demo submissions not settled after {timeout:.0f}s"
            print(run.error, flush=True)
        elif not exit_after_demo:
            print("Demo documents settled; the gateway keeps running (Ctrl-C stops everything).", flush=True)
    except Exception as exc:  # report and stop: the demo must not hang on a failure
        run.error = f"{type(exc).__name__}: {exc}"
        print(f"demo failed: {run.error}", flush=True)
    finally:
        run.done.set()
        if exit_after_demo or run.error:
            server.should_exit = True


def _dac_answers(run: DemoRun, server: Any, *, deadline: float) -> bool:
    """The DAC writes back to the ESSMS (a message, not a receipt): the gateway stores it from the
    mailbox and hands it to the DUI vendor as an ``mssante.message`` event. True once delivered."""
    from connectors.sandbox.mail import plain_mail

    relay = run.mail.relay
    dac = DEMO_MAILBOXES["dac"]
    with relay.lock:
        ours = [a.message_id for a in relay.accepted if dac in a.rcpt_tos]
    raw = plain_mail(
        sender=dac,
        to=ESSMS_MAILBOX,
        subject="Réponse du DAC : visite d'évaluation à domicile programmée",
        body="Bonjour,\n\nNous avons bien reçu le DLU. Une visite d'évaluation est programmée.\n\nLe DAC\n",
        attachments=[("compte-rendu.txt", "text/plain", "Compte rendu de coordination (démo).\n".encode())],
    )
    if ours:  # a reply to our first message (threaded like a mail client would)
        headers, body = raw.split(b"\r\n\r\n", 1)
        raw = headers + f"\r\nIn-Reply-To: {ours[0]}\r\nReferences: {ours[0]}".encode() + b"\r\n\r\n" + body
    relay.submit(raw, mail_from=dac, rcpt_tos=[ESSMS_MAILBOX])
    print(f"  dac     -> a message into {ESSMS_MAILBOX} (an answer, not a receipt)", flush=True)
    while time.monotonic() < deadline and not server.should_exit:
        run.print_peers()
        if any(r["path"] == "/dui-vendor" for r in run.receiver.store.received(since=0) if r["outcome"] == "accepted"):
            print("  gateway    the DAC's message reached the DUI vendor as an mssante.message event", flush=True)
            return True
        time.sleep(0.5)
    run.print_peers()
    print("  the DAC's message did not reach the DUI vendor in time", flush=True)
    return False


def _decision_person() -> tuple[str, dict[str, str]]:
    """Who the demo decision is about: the person of the first demo record (its INS and names)."""
    for name, _doc_type, record in demo_records():
        person = record.get("person") or {}
        traits = person.get("traits") or {}
        given = " ".join(traits.get("birth_given_names") or [])[:64]
        family = str(traits.get("birth_family_name") or "")
        ins = str((person.get("ins") or {}).get("matricule") or "")
        label = f"{given.split(' ')[0]} {family} ({person.get('local_id', '?')}, demo record {name.split('-', 1)[0]})"
        return label, {"ins": ins, "given": given, "family": family, "local_id": str(person.get("local_id") or "")}
    return "a fictitious person", {"local_id": "DEMO-P-SDO"}


def _dui_vendor_event(run: DemoRun, *, after: int, series: str) -> dict[str, Any] | None:
    """The ``sdo.decision`` event of ``series`` the DUI vendor's webhook accepted (row ``n`` > ``after``)."""
    for row in run.receiver.store.received(since=after):
        if row["path"] != "/dui-vendor" or row["outcome"] != "accepted":
            continue
        found = run.receiver.store.body(int(row["n"]))
        if found is None:
            continue
        try:
            envelope = json.loads(found[0])
            event = json.loads(base64.b64decode(envelope["renditions"][0]["content_base64"]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        if isinstance(event, dict) and event.get("event_type") == "sdo.decision" and event.get("series") == series:
            return event
    return None


def _viatrajectoire(run: DemoRun, server: Any, *, deadline: float) -> None:
    """ViaTrajectoire (SI-SdO, IG ``ans.fhir.fr.sdo``): a decision appears at the simulator, the
    ``sdo`` source polls it and the gateway hands it to the DUI vendor's webhook as an
    ``sdo.decision`` event; the DUI answers through the API as a DUI would (the person's agreement,
    ``sdo-consent``, flux 2, then the status "admitted", ``sdo-status`` 47, flux 4) and the Consent
    and the Task land at the simulator. Raises with the reason when a step does not happen in time."""
    simulator = run.sdo.simulator
    store = run.receiver.store
    if run.sdo_snapshot is not None:
        run.sdo_snapshot.unlink(missing_ok=True)  # an earlier run's copy is not this run's proof
    mark = max((int(r["n"]) for r in store.received(since=0)), default=0)
    who, person = _decision_person()
    id_decision = f"MDPH-75-{time.strftime('%Y')}-{uuid.uuid4().hex[:6].upper()}"  # new each run
    published_at = datetime.now(UTC)
    decision = simulator.publish_decision(finess=DEMO_FINESS, id_decision=id_decision, person=person)
    published = time.monotonic()
    national = str(decision["idNat_Decision"])
    print(
        f"  SI-SdO  decision {id_decision} published for {who} to ESSMS {DEMO_FINESS}:"
        f" idNat_Decision {national}, DocumentReference/{decision['id']} v{decision['version']}",
        flush=True,
    )
    event = None
    while event is None and time.monotonic() < deadline and not server.should_exit:
        run.print_peers()
        event = _dui_vendor_event(run, after=mark, series=national)
        if event is None:
            time.sleep(0.1)
    took = time.monotonic() - published
    run.print_peers()
    if event is None:
        if server.should_exit:
            return
        raise RuntimeError(
            f"the SI-SdO decision {id_decision} did not reach the DUI vendor's webhook in {took:.0f}s"
            f" ({_sdo_source_health(run)})"
        )
    payload = event.get("payload") or {}
    stored = _decision_stored_after(run, national, published_at)
    polled = f"polled and stored by the sdo source after {stored:.1f} s, " if stored is not None else ""
    print(
        f"  gateway    decision {payload.get('idDecision')} ({payload.get('state')}): {polled}at the DUI vendor's"
        f" webhook as an sdo.decision event {took:.1f} s after it was published (the sdo source polls every"
        f" {SDO_POLL_SECONDS:g} s)",
        flush=True,
    )
    ids = {"id_decision": str(payload.get("idDecision")), "id_nat_decision": str(payload.get("idNat_Decision"))}
    today = time.strftime("%Y-%m-%d")
    answers: list[tuple[str, dict[str, Any], str]] = [
        (
            "sdo-consent",
            {"collected_on": today},
            "the person's agreement to the orientation (flux 2 Accord)",
        ),
        (
            "sdo-status",
            {"essms_name": "EHPAD Les Tilleuls (démo)", "statut_esms": "47", "date_statut": today},
            "status 47 'usager entré': admitted (flux 4)",
        ),
    ]
    for doc_type, fields, what in answers:
        record = {"essms_finess": DEMO_FINESS, "person_ref": person["local_id"], "decision": ids, **fields}
        resp = requests.post(
            f"{run.api_url}{SUBMISSIONS_PATH}",
            json={"document_type": doc_type, "record": record},
            headers={**run._headers(), "Idempotency-Key": f"demo-{uuid.uuid4()}"},
            timeout=30,
        )
        if resp.status_code != 202:
            raise RuntimeError(f"posting the DUI's {doc_type} answered HTTP {resp.status_code}: {resp.text[:500]}")
        sub_id = str(resp.json()["id"])
        run.sdo_posted.append((doc_type, sub_id))
        print(f"  DUI     -> POST {SUBMISSIONS_PATH} {doc_type:<11} {what} -> submission {sub_id}", flush=True)
    statuses: dict[str, str] = {}
    errors: dict[str, str] = {}  # submission id -> its delivery's last error
    while time.monotonic() < deadline and not server.should_exit:
        for doc_type, sub_id in run.sdo_posted:
            resp = requests.get(f"{run.api_url}{SUBMISSIONS_PATH}/{sub_id}", headers=run._headers(), timeout=10)
            if resp.status_code != 200:
                continue
            body = resp.json()
            statuses[sub_id] = str(body["status"])
            for d in body.get("deliveries") or []:
                if d.get("last_error"):
                    errors[sub_id] = f"{d['destination']}: {str(d['last_error'])[:200]}"
                state = (str(d["status"]), len(d.get("receipts") or []))
                if run.seen_deliveries.get(d["id"]) != state:
                    run.seen_deliveries[d["id"]] = state
                    print(f"  gateway    {doc_type:<11} -> {d['destination']:<14} {_describe(d)}", flush=True)
        if all(statuses.get(s) in TERMINAL_SUBMISSION for _t, s in run.sdo_posted):
            break
        time.sleep(0.2)
    if server.should_exit:
        return
    unsettled = [
        f"{t} {statuses.get(s, 'not seen')}" + (f" ({errors[s]})" if s in errors else "")
        for t, s in run.sdo_posted
        if statuses.get(s) != "delivered"
    ]
    if unsettled:
        raise RuntimeError(f"the DUI's answers were not delivered to ViaTrajectoire: {'; '.join(unsettled)}")
    landed = _sdo_landed(simulator, national)
    for line in landed:
        print(line, flush=True)
    if run.sdo_snapshot is not None:  # the simulator keeps them in memory: a copy outlives the demo
        run.sdo_snapshot.write_text(json.dumps(simulator.received(), indent=2) + "\n", encoding="utf-8")
        print(f"  SI-SdO  all it holds: {simulator.url}/_received (copy in {run.sdo_snapshot})", flush=True)
    if len(landed) < 2:
        raise RuntimeError(f"the SI-SdO simulator does not hold the Consent and the Task for {national}")


def _sdo_source_health(run: DemoRun) -> str:
    """What ``/readyz`` says of the demo's sdo source, for a failure's message."""
    name = f"source:viatrajectoire-{DEMO_FINESS}"
    try:
        checks = requests.get(f"{run.api_url}/readyz", timeout=10).json().get("checks") or {}
    except (requests.RequestException, ValueError, AttributeError):
        return "/readyz did not answer"
    check = checks.get(name) or {}
    if check.get("ok"):
        return f"/readyz: {name} healthy"
    return f"/readyz: {name} {check.get('detail') or 'not reported'}"


def _decision_stored_after(run: DemoRun, national: str, published_at: datetime) -> float | None:
    """Seconds from the decision's publication to the sdo source storing it (the gateway's inbox)."""
    from gateway.storage.db import make_engine
    from gateway.storage.models import InboundMessage

    engine = make_engine(run.settings.database_url)
    try:
        with engine.connect() as conn:
            received = conn.scalar(
                select(InboundMessage.received_at)
                .where(InboundMessage.source == f"viatrajectoire-{DEMO_FINESS}")
                .where(InboundMessage.external_id.startswith(f"decision:{national}:"))
                .order_by(InboundMessage.received_at)
                .limit(1)
            )
    finally:
        engine.dispose()
    if received is None:
        return None
    if received.tzinfo is None:  # SQLite keeps no offset: the gateway stores UTC
        received = received.replace(tzinfo=UTC)
    return max(0.0, (received - published_at).total_seconds())


def _sdo_landed(simulator: Any, national: str) -> list[str]:
    """What the SI-SdO simulator holds for the decision ``national`` (its Consent and Task)."""
    lines: list[str] = []
    for consent in simulator.received("Consent"):
        data = ((consent["resource"].get("provision") or {}).get("data") or [{}])[0]
        if ((data.get("reference") or {}).get("identifier") or {}).get("value") == national:
            lines.append(
                f"  SI-SdO  holds Consent/{consent['id']} v{consent['version']} from ESSMS {consent['owner']}"
                f" (esms-consent, status {consent['resource'].get('status')}, decision {national})"
            )
    for task in simulator.received("Task"):
        inputs = {i["type"]["text"]: i for i in task["resource"].get("input") or []}
        if (inputs.get("idNat_Decision") or {}).get("valueIdentifier", {}).get("value") != national:
            continue
        coding = (inputs.get("statutESMS") or {}).get("valueCodeableConcept", {}).get("coding") or [{}]
        lines.append(
            f"  SI-SdO  holds Task/{task['id']} v{task['version']} from ESSMS {task['owner']} (sdo-task,"
            f" statutESMS {coding[0].get('code')} '{coding[0].get('display')}', idDecision"
            f" {(inputs.get('idDecision') or {}).get('valueIdentifier', {}).get('value')})"
        )
    return lines


def _summary(run: DemoRun) -> None:
    print("Final state (GET /v1/submissions/{id}):", flush=True)
    for name, sub_id in run.posted:
        print(f"  {name:<40} {run.statuses.get(sub_id, '?')}", flush=True)
        for d in run.deliveries.get(sub_id, []):
            print(f"      {d['destination']:<17} {_describe(d)}", flush=True)
    if run.dmp is not None:
        print("The DMP simulator holds (its own store):", flush=True)
        for entry in run.dmp.store.entries():
            replaces = f", replaces {entry.replaces}" if entry.replaces else ""
            print(f"  DMP entry {entry.entry_uuid} {entry.status} ({entry.type_code}{replaces})", flush=True)


def _gate_problems(run: DemoRun) -> list[str]:
    from gateway.conformance import gate_problems

    return gate_problems(run.settings)


def _missing_document_types(records: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    from mappings import registry

    return sorted({doc_type for _n, doc_type, _r in records if registry.get(doc_type) is None})


def _start_dmp(var_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The DMP simulator over mutual TLS, with a dev PKI in ``var/dmp-pki`` (kept across runs)."""
    from connectors.sandbox.dmp import create_dev_pki, start_in_process

    pki = create_dev_pki(var_dir / "dmp-pki", finess=DEMO_FINESS)
    db = var_dir / "dmp-sandbox.db"
    simulator = start_in_process(pki, db_path=db)
    info = {
        "iti41_url": simulator.iti41_url,
        "iti18_url": simulator.iti18_url,
        "ca_bundle": pki.ca,
        "client_cert": pki.client_cert,
        "client_key": pki.client_key,
        "vihf": dict(pki.credentials(DEMO_TENANT).attributes),
        "db": db,
    }
    return simulator, info


def _start_mail(var_dir: Path) -> tuple[Any, str]:
    """The MSSanté mail sandbox under ``var/mail`` (None and the reason when it cannot run)."""
    try:
        from connectors.sandbox.mail import MailSandbox, MailSandboxUnavailable
    except ImportError as exc:  # aiosmtpd missing from an old install
        return None, f"the mail sandbox needs {exc.name} (python3 scripts/dev.py gateway installs it)"
    sandbox = MailSandbox(
        var_dir / "mail",
        DEMO_MAILBOXES.values(),
        essms=ESSMS_MAILBOX,
        mdn_from=[DEMO_MAILBOXES["dac"]],  # the DAC's software acknowledges integration (MDN)
    )
    try:
        return sandbox.start(), ""
    except (MailSandboxUnavailable, OSError) as exc:
        return None, str(exc)


def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sandbox_port: int = 8787,
    var_dir: Path = Path("var"),
    exit_after_demo: bool = False,
    timeout: float = 120.0,
    mail: bool = True,
) -> int:
    """Run the demo; returns the process exit code (0: every demo submission settled)."""
    var_dir = var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    port = port if port and _port_free(host, port) else _free_port(host)
    api_url = f"http://{host}:{port}"
    receipt_url = f"{api_url}/inbound/{RECEIPT_SOURCE}"
    secret_file = _webhook_secret(var_dir / "demo-webhook-secret")
    secrets = [secret_file.read_text(encoding="ascii").strip()]  # the sandbox verifies what the gateway signs
    try:
        receiver = SandboxReceiver(
            db_path=var_dir / "sandbox.db", port=sandbox_port, webhook_secrets=secrets, receipt_url=receipt_url
        )
    except OSError:  # the fixed port is taken: any free one will do
        receiver = SandboxReceiver(
            db_path=var_dir / "sandbox.db", port=0, webhook_secrets=secrets, receipt_url=receipt_url
        )
    mail_sandbox, mail_problem = _start_mail(var_dir) if mail else (None, "disabled with --no-mail")
    dmp_sandbox, dmp_info = _start_dmp(var_dir)
    sdo_sandbox = None
    try:
        from connectors.sandbox.sdo import start_sdo_sandbox

        # the SI-SdO (ViaTrajectoire PH) simulator: HTTPS on loopback, its CA and server certificate
        # in var/sdo-sandbox, the demo ESSMS enrolled (OAuth client + client certificate)
        sdo_sandbox = start_sdo_sandbox([DEMO_FINESS], state_dir=var_dir / "sdo-sandbox")
        return _run(
            host=host,
            port=port,
            api_url=api_url,
            var_dir=var_dir,
            secret_file=secret_file,
            receiver=receiver,
            mail_sandbox=mail_sandbox,
            mail_problem=mail_problem,
            dmp_sandbox=dmp_sandbox,
            dmp_info=dmp_info,
            sdo_sandbox=sdo_sandbox,
            exit_after_demo=exit_after_demo,
            timeout=timeout,
        )
    finally:
        if sdo_sandbox is not None:
            sdo_sandbox.stop()
        dmp_sandbox.stop()
        receiver.stop()
        if mail_sandbox is not None:
            mail_sandbox.stop()


def _run(
    *,
    host: str,
    port: int,
    api_url: str,
    var_dir: Path,
    secret_file: Path,
    receiver: SandboxReceiver,
    mail_sandbox: Any,
    mail_problem: str,
    dmp_sandbox: Any,
    dmp_info: Mapping[str, Any],
    sdo_sandbox: Any,
    exit_after_demo: bool,
    timeout: float,
) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.logging import configure_logging
    from gateway.runtime import Runtime
    from gateway.storage.migrate import upgrade

    mail_info = mail_sandbox.info() if mail_sandbox is not None else None
    routing_file = var_dir / "routing.json"
    sdo_wiring = sdo_sandbox.gateway_wiring(
        tenant=DEMO_TENANT, directory=var_dir / "sdo", poll_seconds=SDO_POLL_SECONDS, dui_destination="dui-vendor"
    )
    document = routing_document(receiver.url, secret_file, mail=mail_info, dmp=dmp_info, sdo=sdo_wiring["routing"])
    routing_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    overrides: dict[str, Any] = {
        "profile": "dev",
        "routing_file": routing_file,
        "embedded_worker": True,
        "backoff_base_seconds": 1.0,
        "poll_interval_seconds": 0.2,
    }
    credentials_file = var_dir / "credentials.yaml"
    credentials_file.write_text(
        "# written by dui-gateway demo: the ESSMS's certificates (DMP, MSSanté, SI-SdO) and its SI-SdO OAuth"
        " client, by reference (never inline)\n"
        + yaml.safe_dump(credentials_document(mail_info, dmp_info, sdo_wiring["credentials"]), sort_keys=False),
        encoding="utf-8",
    )
    if "DUI_GATEWAY_CREDENTIALS_FILE" not in os.environ:
        overrides["credentials_file"] = credentials_file
    if "DUI_GATEWAY_DATABASE_URL" not in os.environ:
        overrides["database_url"] = f"sqlite:///{var_dir / 'dui-gateway.db'}"
    if "DUI_GATEWAY_LOG_LEVEL" not in os.environ:
        overrides["log_level"] = "WARNING"  # the demo prints what happens; INFO shows the JSON logs too
    kit = installed_kit(var_dir)
    if "CISIS_KIT_DIR" not in os.environ and kit is not None:
        overrides["CISIS_KIT_DIR"] = kit  # the field's alias (as the environment names it)
    if "DUI_GATEWAY_CONSOLE_COOKIE_SECURE" not in os.environ:
        overrides["console_cookie_secure"] = False  # the demo serves plain HTTP on loopback
    settings = Settings(**overrides)
    configure_logging(settings)
    upgrade(settings.database_url)
    api_key = provision(settings, var_dir / "demo-api-key")
    console_user, console_password = provision_console_user(settings, var_dir / "demo-console-password")

    receiver.start()
    runtime = Runtime.from_settings(settings)
    try:
        app = create_app(runtime)  # embedded_worker=True: its lifespan starts and drains the workers
        has_console = any(str(getattr(r, "path", "")).startswith("/console") for r in app.routes)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning"))
        run = DemoRun(
            api_url=api_url,
            api_key=api_key,
            receiver=receiver,
            settings=settings,
            mail=mail_sandbox,
            dmp=dmp_sandbox,
            sdo=sdo_sandbox,
            sdo_snapshot=var_dir / "sdo-sandbox" / "received.json",
        )
        if mail_info is not None:
            mail_lines = [
                f"  MSSanté relay  smtp://127.0.0.1:{mail_info['smtp']['port']} (STARTTLS + client certificate, DSN)",
                f"  MSSanté IMAP   imaps://127.0.0.1:{mail_info['imap']['imaps_port']} (dovecot, login by the"
                " ESSMS's certificate; Maildirs in " + str(var_dir / "mail") + ")",
                f"  credentials    {credentials_file} (the ESSMS's certificate: {mail_info['essms']['certificate']})",
            ]
        else:
            mail_lines = [
                f"  MSSanté        skipped: {mail_problem}",
                "                 (a mssante-sandbox webhook stands in; install dovecot-imapd for the real relay)",
            ]
        print(
            "\n".join(
                [
                    "dui-gateway demo",
                    f"  API            {api_url}/v1",
                    f"  API docs       {api_url}/docs",
                    *(
                        [
                            f"  console        {api_url}/console  (dev only: user {console_user!r}, password"
                            f" {console_password!r}, kept in {var_dir / 'demo-console-password'})"
                        ]
                        if has_console
                        else []
                    ),
                    f"  API key        {api_key}",
                    f"  sandbox        {receiver.url}/_received  (what the destinations received)",
                    f"  receipts       {receiver.url}/_receipts -> {api_url}/inbound/{RECEIPT_SOURCE}",
                    f"  DMP simulator  {dmp_info['iti41_url']} (XDS.b ITI-41, mutual TLS with the ESSMS's"
                    f" certificate, VIHF; documents in {dmp_info['db']})",
                    f"  SI-SdO         {sdo_sandbox.base_url} (ViaTrajectoire PH simulator, FHIR R4: OAuth2 client"
                    f" credentials + the ESSMS's certificate; polled every {SDO_POLL_SECONDS:g} s by the sdo source)",
                    *mail_lines,
                    f"  database       {settings.database_url}",
                    f"  routing        {routing_file}",
                    "  try: curl -H 'Authorization: Bearer <API key>' " + f"{api_url}{SUBMISSIONS_PATH}",
                    "Ctrl-C stops everything." if not exit_after_demo else "Stops once the demo documents settle.",
                ]
            ),
            flush=True,
        )
        feeder = threading.Thread(
            target=_feed,
            args=(run, server),
            kwargs={"exit_after_demo": exit_after_demo, "timeout": timeout},
            name="demo-feeder",
            daemon=True,
        )
        feeder.start()
        server.run()  # until Ctrl-C / SIGTERM, or the feeder asks it to exit
        feeder.join(timeout=5)
        return 1 if run.error else 0
    finally:
        runtime.close()
