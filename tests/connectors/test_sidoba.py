"""The SIDOBA connector against the local SIDOBA simulator (a real HTTP server): the connector
contract, the JSON and CSV payloads, and what the simulator refuses."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from connectors.base import Envelope, PermanentError
from connectors.sandbox.sidoba import SidobaSimulator
from connectors.sidoba import SidobaConnector, SidobaSettings, request_body
from mappings.base import RecordFacts, RenderContext
from mappings.indicator_dataset import INDICATOR_DATASET, IndicatorDatasetRecord
from reporting import Period, compute
from reporting.export import to_json_bytes
from tests.connectors.contract import ConnectorContract
from tests.peers.net import free_port
from tests.reporting.helpers import FINESS, ev


def _envelope(version: int = 1) -> Envelope:
    ds = compute([ev("admission", "2026-01-10T10:00")], finess=FINESS, period=Period.parse("2026-01"))
    record = IndicatorDatasetRecord(
        essms_finess=FINESS,
        period="2026-01",
        layout_version="1.0",
        dataset=json.loads(to_json_bytes([ds]))["datasets"][0],
    )
    [rendition] = INDICATOR_DATASET.render(record, RenderContext(now=datetime.now(UTC), submission_id=uuid.uuid4()))
    if version != 1:
        from dataclasses import replace

        rendition = replace(rendition, version=version)
    return Envelope(
        delivery_id=str(uuid.uuid4()),
        submission_id=str(uuid.uuid4()),
        idempotency_key=f"delivery-{uuid.uuid4()}",
        tenant="t",
        destination="sidoba",
        document_type="indicator-dataset",
        renditions=(rendition,),
        facts=RecordFacts(person_ref=f"essms:{FINESS}:2026-01", essms_finess=FINESS),
    )


class TestSidoba(ConnectorContract):
    @pytest.fixture
    def peer(self) -> Iterator[SidobaSimulator]:
        with SidobaSimulator() as sim:
            yield sim

    def envelope(self) -> Envelope:
        return _envelope()

    def connector(self, peer: SidobaSimulator) -> SidobaConnector:
        return SidobaConnector(SidobaSettings(url=f"{peer.url}/datasets", health_url=f"{peer.url}/_health", timeout=5))

    def down_connector(self) -> SidobaConnector:
        url = f"http://127.0.0.1:{free_port()}"
        return SidobaConnector(SidobaSettings(url=f"{url}/datasets", health_url=f"{url}/_health", timeout=2))

    def reject_next(self, peer: SidobaSimulator) -> None:
        peer.control(reject_next=1, status=422)

    def fail_next(self, peer: SidobaSimulator) -> None:
        peer.control(fail_next=1, status=503)

    def slow_next(self, peer: SidobaSimulator, seconds: float) -> None:
        peer.control(delay=seconds)

    def accepted_count(self, peer: SidobaSimulator, envelope: Envelope) -> int:
        return peer.count(envelope.idempotency_key)


def test_the_simulator_holds_the_dataset_and_refuses_an_older_version() -> None:
    with SidobaSimulator() as sim:
        conn = SidobaConnector(SidobaSettings(url=f"{sim.url}/datasets"))
        conn.send(_envelope(version=2))
        held = requests.get(f"{sim.url}/_datasets", timeout=5).json()["datasets"]
        assert held[0]["dataset"]["totals"]["days_realised"] == 22
        assert held[0]["schema_version"] == "1.0" and held[0]["period"] == "2026-01"
        with pytest.raises(PermanentError):
            conn.send(_envelope(version=1))  # 409: a newer version of this period is held


def test_csv_payload_carries_the_envelope_in_headers() -> None:
    body, headers = request_body(_envelope(), "csv")
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["X-Sidoba-Schema-Version"] == "1.0" and headers["X-Sidoba-Period"] == "2026-01"
    lines = body.decode().splitlines()
    assert lines[0] == "layout_version,finess,period,accommodation,indicator,breakdown,value"
    assert f"1.0,{FINESS},2026-01,all,days_realised,,22" in lines


def test_an_envelope_without_a_dataset_is_permanent() -> None:
    from tests.connectors.contract import make_envelope

    with pytest.raises(PermanentError):
        SidobaConnector(SidobaSettings(url="http://127.0.0.1:9/x")).send(make_envelope())
