"""``dui-gateway sandbox dmp`` as a real child process, with a dev PKI made by create_dev_pki."""

from __future__ import annotations

from pathlib import Path

from connectors.dmp import DmpConnector, DmpSettings
from connectors.sandbox.dmp import create_dev_pki, spawn
from tests.connectors.dmp.conftest import envelope, render


def test_simulator_process_with_a_dev_pki(tmp_path: Path) -> None:
    pki = create_dev_pki(tmp_path / "pki", finess="750803447")
    assert create_dev_pki(tmp_path / "pki", finess="750803447") == pki  # reused, not rewritten
    proc = spawn(pki, db_path=tmp_path / "dmp.db")
    try:
        conn = DmpConnector(
            DmpSettings(iti41_url=proc.iti41_url, iti18_url=proc.iti18_url, ca_bundle=pki.ca, timeout=10)
        )
        rendition, facts = render()
        creds = pki.credentials("t1")
        env = envelope(None, rendition, facts, creds=creds)  # type: ignore[arg-type]
        assert conn.send(env).detail["status"] == "Success"
        assert conn.health().ok
        conn.close()
    finally:
        proc.stop()
    assert proc.process.returncode is not None
