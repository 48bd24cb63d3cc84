"""The connector contract suite for ``dmp`` against the DMP simulator (real mutual-TLS sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.base import Connector, Envelope
from connectors.dmp import DmpConnector, DmpSettings
from connectors.sandbox.dmp import DmpSimulator
from tests.connectors.contract import ConnectorContract
from tests.connectors.dmp.conftest import Pki, connector_for, envelope, render
from tests.peers.net import free_port


@dataclass
class Peer:
    sim: DmpSimulator
    pki: Pki


class TestDmpContract(ConnectorContract):
    _pki: Pki

    @pytest.fixture(autouse=True)
    def _keep_pki(self, pki: Pki) -> None:
        self._pki = pki

    @pytest.fixture
    def peer(self, pki: Pki, tmp_path: Path) -> Iterator[Peer]:
        sim = DmpSimulator(ca=pki.ca_path, cert=pki.server_cert, key=pki.server_key, db_path=tmp_path / "c.db").start()
        try:
            yield Peer(sim, pki)
        finally:
            sim.stop()

    def connector(self, peer: Peer) -> Connector:
        return connector_for(peer.sim, peer.pki)

    def down_connector(self) -> Connector:
        port = free_port()
        base = f"https://localhost:{port}/dmp/xds"
        settings = DmpSettings(
            iti41_url=f"{base}/iti41", iti18_url=f"{base}/iti18", ca_bundle=self._pki.ca_path, timeout=2.0
        )
        return DmpConnector(settings)

    def reject_next(self, peer: Peer) -> None:
        peer.sim.control({"reject_next": 1})

    def fail_next(self, peer: Peer) -> None:
        peer.sim.control({"fail_next": 1, "fail_status": 503})

    def slow_next(self, peer: Peer, seconds: float) -> None:
        peer.sim.control({"delay_after_store": seconds})

    def accepted_count(self, peer: Peer, envelope: Envelope) -> int:
        ids = {r.document_id for r in envelope.renditions}
        return sum(1 for e in peer.sim.store.entries() if e.unique_id in ids)

    def envelope(self) -> Envelope:
        rendition, facts = render()
        return envelope(self._pki, rendition, facts)
