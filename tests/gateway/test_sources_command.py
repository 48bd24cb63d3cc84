"""``dui-gateway sources``: runs only the inbound sources, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.peers.net import free_port


def _env(tmp_path: Path, db_url: str, master_keys_spec: str, routing: str) -> dict[str, str]:
    path = tmp_path / "routing.yaml"
    path.write_text(routing)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUI_GATEWAY_")}
    env.update(
        DUI_GATEWAY_PROFILE="dev",
        DUI_GATEWAY_DATABASE_URL=db_url,
        DUI_GATEWAY_MASTER_KEYS=master_keys_spec,
        DUI_GATEWAY_ROUTING_FILE=str(path),
        DUI_GATEWAY_LOG_JSON="true",
    )
    return env


def _exe() -> str:
    return str(Path(sys.executable).parent / "dui-gateway")


def test_sources_process_runs_and_drains(tmp_path: Path, sqlite_url: str, master_keys_spec: str) -> None:
    routing = (
        "sources:\n  box:\n    source: mssante-imap\n    tenant: demo\n"
        f"    settings: {{host: 127.0.0.1, port: {free_port()}, essms_finess: '759900004', poll_seconds: 0.2,"
        " timeout: 1}\n"
    )
    proc = subprocess.Popen(
        [_exe(), "sources"],
        env=_env(tmp_path, sqlite_url, master_keys_spec, routing),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline and "sources_started" not in seen:
            seen += proc.stdout.readline()
        assert "sources_started" in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sources_without_any_source_exits_with_an_error(tmp_path: Path, sqlite_url: str, master_keys_spec: str) -> None:
    done = subprocess.run(
        [_exe(), "sources"],
        env=_env(tmp_path, sqlite_url, master_keys_spec, "destinations: {}\n"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "no inbound source" in done.stderr
