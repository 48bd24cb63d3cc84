"""No personal data in logs on the HL7 v2 path: a real ``dui-gateway sources`` (mllp listener) and a
real worker process receive the ANS PAM-FR examples, unknown persons, hostile frames (bad
charset, oversized, garbage), interpret them and deliver the events to the sandbox receiver; the
names, INS and birth dates the messages carry must appear nowhere in what the processes printed."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from connectors.hl7v2.mllp import frame, read_frame
from gateway.storage.models import InboundMessage
from tests.connectors.hl7v2.support import EXAMPLES, adt, msa
from tests.peers.gateway import Deployment, provision, webhook_routing
from tests.peers.net import free_port, wait_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FINESS = "750000010"
SECRETS = ["PAT-TROIS", "DOMINIQUE", "279035121518989", "19790328", "NOM-TEST", "19400101", "Breteuil"]


def test_no_personal_data_in_the_logs_of_the_mllp_path(tmp_path: Path) -> None:
    dep = Deployment.create(tmp_path / "deployment")
    port = free_port()
    try:
        dep.migrate()
        provision(dep.db_url, finess=FINESS)
        sandbox = dep.start_sandbox()
        routing = webhook_routing(sandbox.url, destinations={"dui": "webhook"}, document_types=["inbound-event"])
        routing["sources"] = {
            "hospital-adt": {"source": "mllp", "tenant": "e2e", "settings": {"essms_finess": FINESS, "port": port}}
        }
        dep.write_routing(routing)
        dep.env["DUI_GATEWAY_LOG_LEVEL"] = "DEBUG"
        listener = dep.spawn("sources", "sources")
        wait_port(port, alive=listener.alive, timeout=60)
        dep.start_worker("worker", run_sources="false")
        messages = [p.read_bytes() for p in sorted((EXAMPLES / "pam-fr-consent").glob("*.er7"))]
        messages += [adt(t, control_id=f"N-{t}") for t in ("A01", "A03", "A11", "A40", "A28")]
        hostile = [
            adt("A01", control_id="BAD-CS").replace(b"NOM-TEST", b"NOM-TEST\xff\xfe"),
            adt("A01", control_id="BIG") + b"NTE|1||" + b"NOM-TEST " * 600_000 + b"\r",
            b"PID|1||279035121518989^^^X^PI||PAT-TROIS^DOMINIQUE\r",
        ]
        acked = 0
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for raw in messages + hostile:
                sock.sendall(frame(raw))
                acked += msa(read_frame(sock))[0] == "AA"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"PAT-TROIS DOMINIQUE 279035121518989\r\n")  # garbage outside a frame
            assert sock.recv(10) == b""
        assert acked == len(messages)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with dep.engine.connect() as conn:
                waiting = conn.execute(
                    select(func.count())
                    .select_from(InboundMessage)
                    .where(InboundMessage.status.in_(["received", "processing"]))
                ).scalar_one()
            if waiting == 0 and len(sandbox.received()) >= len(messages):
                break
            time.sleep(0.5)
        assert len(sandbox.received()) >= len(messages), dep.logs()
        logs = dep.logs()
        assert "mllp_rejected" in logs  # the hostile frames were logged (without content)
        leaks = [s for s in SECRETS if s.lower() in logs.lower()]
        assert not leaks, f"personal data in the logs: {leaks}"
    finally:
        dep.close()
