"""The ``sdo`` connector against the SI-SdO simulator: contract suite, Consent/Task flows, OAuth, mTLS."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from connectors.base import Envelope, PermanentError, TransientError
from connectors.fhir._oauth import TokenCache
from connectors.sandbox.sdo import SdoSandbox
from connectors.sdo import SdoConnector, SdoConnectorSettings
from mappings.base import PreviousVersion
from tests.connectors.contract import ConnectorContract
from tests.connectors.sdo.conftest import ESSMS_A, ESSMS_B, consent_envelope, credentials, status_envelope
from tests.peers import free_port


def _connector(box: SdoSandbox, *, auth: str = "oauth", **extra: Any) -> SdoConnector:
    settings = SdoConnectorSettings(
        base_url=box.base_url,
        token_url=box.token_url,
        ca_file=str(box.ca_file),
        auth=auth,  # type: ignore[arg-type]
        timeout=5.0,
        **extra,
    )
    return SdoConnector(settings)


def _tasks(box: SdoSandbox, set_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in box.simulator.received("Task")
        if any(i.get("value") == set_id for i in r["resource"].get("identifier", []))
    ]


class TestSdoContract(ConnectorContract):
    @pytest.fixture
    def peer(self, sandbox: SdoSandbox) -> SdoSandbox:
        self._decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0001")
        self._creds = credentials(sandbox.essms[ESSMS_A])
        return sandbox

    def envelope(self) -> Envelope:
        return status_envelope(self._decision, self._creds)

    def connector(self, peer: SdoSandbox) -> SdoConnector:
        return _connector(peer)

    def down_connector(self) -> SdoConnector:
        port = free_port()
        settings = SdoConnectorSettings(
            base_url=f"https://127.0.0.1:{port}/fhir", token_url=f"https://127.0.0.1:{port}/oauth/token", timeout=2.0
        )
        self._creds = getattr(self, "_creds", None) or _dummy_creds()
        self._decision = getattr(self, "_decision", None) or {"idDecision": "D", "idNat_Decision": "VT-D"}
        return SdoConnector(settings)

    def reject_next(self, peer: SdoSandbox) -> None:
        peer.simulator.set_faults(reject_next=1)

    def fail_next(self, peer: SdoSandbox) -> None:
        peer.simulator.set_faults(fail_next=1)

    def slow_next(self, peer: SdoSandbox, seconds: float) -> None:
        peer.simulator.set_faults(slow_next=seconds)

    def accepted_count(self, peer: SdoSandbox, envelope: Envelope) -> int:
        return len(_tasks(peer, envelope.renditions[0].set_id))


def _dummy_creds() -> Any:
    from connectors.base import Credentials

    return Credentials(tenant="demo", essms_finess=ESSMS_A, purpose="sdo", username="x", password="y")


def test_consent_then_statuses_land_on_one_task_in_order(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0002")
    creds = credentials(sandbox.essms[ESSMS_A])
    conn = _connector(sandbox)

    receipt = conn.send(consent_envelope(decision, creds))
    assert receipt.remote_id and receipt.remote_id.startswith("Consent/")
    again = conn.send(consent_envelope(decision, creds))  # a resend: the same Consent
    assert again.remote_id == receipt.remote_id
    assert len(sandbox.simulator.received("Consent")) == 1

    first = status_envelope(decision, creds, statut="42")
    r1 = conn.send(first)
    assert r1.remote_id and r1.remote_id.startswith("Task/") and r1.detail["interaction"] == "create"
    rendition = first.renditions[0]
    previous = PreviousVersion(set_id=rendition.set_id, version=1, document_id=rendition.document_id)
    admitted = status_envelope(decision, creds, statut="47", previous=previous, held_remote_id=r1.remote_id)
    r2 = conn.send(admitted)
    assert r2.remote_id == r1.remote_id and r2.detail["interaction"] == "update"
    tasks = _tasks(sandbox, rendition.set_id)
    assert len(tasks) == 1 and tasks[0]["version"] == 2
    statut = next(i for i in tasks[0]["resource"]["input"] if i["type"]["text"] == "statutESMS")
    assert statut["valueCodeableConcept"]["coding"][0]["code"] == "47"
    inputs = {i["type"]["text"]: i for i in tasks[0]["resource"]["input"]}
    assert inputs["idDecision"]["valueIdentifier"]["value"] == "MDPH-75-0002"
    assert inputs["idNat_Decision"]["valueIdentifier"]["value"] == decision["idNat_Decision"]


def test_update_without_held_version_updates_the_existing_task(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0003")
    creds = credentials(sandbox.essms[ESSMS_A])
    conn = _connector(sandbox)
    first = status_envelope(decision, creds, statut="42")
    conn.send(first)
    refusal = status_envelope(decision, creds, statut="45", motif="114")  # receipt of v1 lost: no held
    receipt = conn.send(refusal)
    assert receipt.detail["interaction"] == "update"
    tasks = _tasks(sandbox, first.renditions[0].set_id)
    assert len(tasks) == 1
    motif = next(i for i in tasks[0]["resource"]["input"] if i["type"]["text"] == "motifESMS")
    assert motif["valueCodeableConcept"]["coding"][0]["code"] == "114"


def test_rejected_task_operation_outcome_is_permanent(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0004")
    sandbox.simulator.set_faults(reject_next=1)
    with pytest.raises(PermanentError) as info:
        _connector(sandbox).send(status_envelope(decision, credentials(sandbox.essms[ESSMS_A])))
    assert "422" in str(info.value) and "business-rule" in str(info.value)


def test_status_for_a_decision_of_another_essms_is_refused_permanently(sandbox: SdoSandbox) -> None:
    other = sandbox.simulator.publish_decision(finess=ESSMS_B, id_decision="MDPH-75-0005")
    with pytest.raises(PermanentError):
        _connector(sandbox).send(status_envelope(other, credentials(sandbox.essms[ESSMS_A])))
    assert sandbox.simulator.received("Task") == []


def test_invalid_resource_is_not_sent(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0006")
    env = status_envelope(decision, credentials(sandbox.essms[ESSMS_A]))
    task = json.loads(env.renditions[0].content)
    task["input"] = [i for i in task["input"] if i["type"]["text"] != "idNat_Decision"]
    broken = dataclasses.replace(env.renditions[0], content=json.dumps(task).encode())
    with pytest.raises(PermanentError, match="does not conform"):
        _connector(sandbox).send(dataclasses.replace(env, renditions=(broken,)))
    assert sandbox.simulator.requests() == []


def test_token_cached_then_renewed_on_expiry(sandbox: SdoSandbox) -> None:
    sim = sandbox.simulator
    sim.set_faults(token_ttl=4.0)  # long enough for two sends on a busy machine
    decision = sim.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0007")
    creds = credentials(sandbox.essms[ESSMS_A])
    conn = _connector(sandbox, token_leeway=0)
    conn.send(consent_envelope(decision, creds))
    conn.send(consent_envelope(decision, creds))
    assert sim.token_requests == 1, "the token is reused while valid"
    time.sleep(4.3)
    conn.send(consent_envelope(decision, creds))
    assert sim.token_requests == 2, "an expired token is renewed before the call"


def test_revoked_token_is_dropped_and_renewed_once(sandbox: SdoSandbox) -> None:
    sim = sandbox.simulator
    decision = sim.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0008")
    creds = credentials(sandbox.essms[ESSMS_A])
    conn = _connector(sandbox)
    conn.send(consent_envelope(decision, creds))
    sim.revoke_tokens()  # still valid for the client, refused by the server
    conn.send(consent_envelope(decision, creds))
    assert sim.token_requests == 2
    assert [s for _, _, s in sim.requests()].count(401) == 1


def test_wrong_client_secret_is_permanent(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0009")
    creds = dataclasses.replace(credentials(sandbox.essms[ESSMS_A]), password="not-the-secret")
    with pytest.raises(PermanentError, match="invalid_client"):
        _connector(sandbox).send(consent_envelope(decision, creds))


def test_mutual_tls_identifies_the_essms(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0010")
    creds = credentials(sandbox.essms[ESSMS_A])
    receipt = _connector(sandbox, auth="mtls").send(consent_envelope(decision, creds))
    assert receipt.remote_id
    assert sandbox.simulator.token_requests == 0
    [consent] = sandbox.simulator.received("Consent")
    assert consent["owner"] == ESSMS_A


def test_mtls_without_certificate_is_permanent(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0011")
    creds = dataclasses.replace(credentials(sandbox.essms[ESSMS_A]), certificate_pem=None)
    with pytest.raises(PermanentError, match="certificate"):
        _connector(sandbox, auth="mtls").send(consent_envelope(decision, creds))


def test_outage_is_transient(sandbox: SdoSandbox) -> None:
    decision = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0012")
    sandbox.simulator.set_faults(down=True)
    with pytest.raises(TransientError):
        _connector(sandbox).send(consent_envelope(decision, credentials(sandbox.essms[ESSMS_A])))


def test_shared_token_cache_is_per_client(sandbox: SdoSandbox) -> None:
    cache = TokenCache()
    a = sandbox.simulator.publish_decision(finess=ESSMS_A, id_decision="MDPH-75-0013")
    b = sandbox.simulator.publish_decision(finess=ESSMS_B, id_decision="MDPH-75-0014")
    conn = SdoConnector(
        SdoConnectorSettings(base_url=sandbox.base_url, token_url=sandbox.token_url, ca_file=str(sandbox.ca_file)),
        tokens=cache,
    )
    conn.send(consent_envelope(a, credentials(sandbox.essms[ESSMS_A])))
    conn.send(consent_envelope(b, credentials(sandbox.essms[ESSMS_B]), finess=ESSMS_B))
    owners = sorted(c["owner"] for c in sandbox.simulator.received("Consent"))
    assert owners == [ESSMS_A, ESSMS_B]
    assert cache.fetches == 2
