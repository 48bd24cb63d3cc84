"""A worker process for the SIGTERM test: ``python worker_child.py DB_URL KEY_HEX MARKER_DIR``.

Its only destination writes ``entered`` into MARKER_DIR when a send starts, takes 1.5 s, then
writes ``sent`` and succeeds; the process runs ``run_worker_process`` until SIGTERM.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from connectors.base import Envelope, Receipt
from gateway.security.crypto import KeyRing
from gateway.storage.db import make_engine, make_sessionmaker
from gateway.worker import run_worker_process
from mappings import registry
from tests.gateway.engine.support import FakeConnector, make_runtime, webhook_routing
from tests.support.doctype import NOTE


class SlowPeer(FakeConnector):
    def __init__(self, marker_dir: Path) -> None:
        super().__init__()
        self.marker_dir = marker_dir

    def send(self, envelope: Envelope) -> Receipt:
        (self.marker_dir / "entered").write_text(envelope.delivery_id)
        time.sleep(1.5)
        receipt = super().send(envelope)
        (self.marker_dir / "sent").write_text(envelope.delivery_id)
        return receipt


def main() -> int:
    db_url, key_hex, marker = sys.argv[1:4]
    registry.register(NOTE)
    factory = make_sessionmaker(make_engine(db_url))
    runtime = make_runtime(
        factory,
        KeyRing([("test-1", bytes.fromhex(key_hex))]),
        routing=webhook_routing("partner"),
        connectors={"partner": SlowPeer(Path(marker))},
        worker_concurrency=2,
    )
    return run_worker_process(runtime, drain_timeout=20)


if __name__ == "__main__":
    sys.exit(main())
