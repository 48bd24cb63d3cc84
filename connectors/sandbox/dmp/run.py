"""Starting the DMP simulator: in this process (a thread), or as ``dui-gateway sandbox dmp``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from connectors.sandbox.dmp.pki import DevPki, create_dev_pki
from connectors.sandbox.dmp.server import DmpSimulator

__all__ = ["SimulatorProcess", "serve", "spawn", "start_in_process"]


def start_in_process(pki: DevPki, *, db_path: Path | None = None, port: int = 0) -> DmpSimulator:
    """A simulator serving in a daemon thread of this process (``.stop()`` when done)."""
    return DmpSimulator(ca=pki.ca, cert=pki.server_cert, key=pki.server_key, db_path=db_path, port=port).start()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(
    *,
    host: str,
    port: int,
    db: Path,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    pki_dir: Path,
    finess: str,
    auto_open: bool,
    accept_test_ins: bool,
    verbose: bool,
    out: IO[str] = sys.stdout,
) -> None:
    """Run the simulator until SIGTERM/SIGINT; without ``ca/cert/key``, a dev PKI in ``pki_dir``."""
    if ca is None or cert is None or key is None:
        pki = create_dev_pki(pki_dir, finess=finess)
        ca, cert, key = pki.ca, pki.server_cert, pki.server_key
        client = {"client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
    else:
        client = {}
    sim = DmpSimulator(
        ca=ca,
        cert=cert,
        key=key,
        db_path=db,
        host=host,
        port=port,
        auto_open=auto_open,
        accept_test_ins=accept_test_ins,
        quiet=not verbose,
    )
    event = {
        "event": "dmp_sandbox_listening",
        "url": sim.url,
        "iti41": sim.iti41_url,
        "iti18": sim.iti18_url,
        "fhir": sim.fhir_url,
        "ca": str(ca),
        "db": str(db),
        **client,
    }
    print(json.dumps(event), file=out, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


@dataclass
class SimulatorProcess:
    """A ``dui-gateway sandbox dmp`` child process and where it listens."""

    process: subprocess.Popen[str]
    url: str
    iti41_url: str
    iti18_url: str
    fhir_url: str

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def spawn(pki: DevPki, *, db_path: Path, port: int = 0, timeout: float = 30.0) -> SimulatorProcess:
    """``dui-gateway sandbox dmp`` as a child process with this dev PKI; waits until it listens."""
    script = Path(sys.executable).parent / "dui-gateway"
    base = [str(script)] if script.exists() else [sys.executable, "-c", "from gateway.cli import main; main()"]
    cmd = [
        *base,
        "sandbox",
        "dmp",
        "--port",
        str(port),
        "--db",
        str(db_path),
        "--ca",
        str(pki.ca),
        "--cert",
        str(pki.server_cert),
        "--key",
        str(pki.server_key),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "dmp_sandbox_listening":
            return SimulatorProcess(proc, event["url"], event["iti41"], event["iti18"], event["fhir"])
    proc.kill()
    raise RuntimeError("the DMP simulator did not start (see its output)")
