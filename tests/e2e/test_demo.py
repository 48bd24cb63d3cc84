"""``dui-gateway demo --exit-after-demo``: the README's "run the gateway" path, end to end."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from connectors.sandbox.receiver import ReceiverStore
from tests.e2e.conftest import require_dlu
from tests.peers.process import ManagedProcess, dui_gateway_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_posts_documents_that_reach_the_sandbox(tmp_path: Path, kit_dir: Path) -> None:
    require_dlu()
    var = tmp_path / "var"
    proc = ManagedProcess(
        "demo",
        dui_gateway_cmd(
            "demo", "--exit-after-demo", "--port", "0", "--sandbox-port", "0", "--var-dir", str(var), "--timeout", "240"
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
    for line in ("API docs", "/docs", "API key        dgw_", "/_received"):
        assert line in out, out

    store = ReceiverStore(var / "sandbox.db")
    try:
        rows = store.received()
    finally:
        store.close()
    accepted = [r for r in rows if r["outcome"] == "accepted"]
    # the demo asks the sandbox to fail the first two deliveries: they were retried
    assert [r["status"] for r in rows if r["outcome"] == "failed"] == [503, 503]
    # 01 (qualified INS) and 03 (its new version) go to both; 02 (provisional identity) never to the DMP
    assert sorted(r["path"] for r in accepted) == ["/dmp", "/dmp", "/mssante", "/mssante", "/mssante"]
    # versions of one series arrive in order at each destination
    versions: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for r in accepted:
        for doc in r["documents"]:
            versions[(r["path"], doc["kind"], doc["set_id"])].append(doc["version"])
    assert all(v == sorted(v) for v in versions.values())
    assert any(v == [1, 2] for k, v in versions.items() if k[0] == "/dmp")
    # the API key file is private
    assert (var / "demo-api-key").stat().st_mode & 0o077 == 0
