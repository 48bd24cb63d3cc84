"""``dui-gateway worker --health-port``: the probes and the metrics Kubernetes and Prometheus
read from a worker process (docker/k8s/worker.yaml points at them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from gateway.metrics import ATTEMPTS
from gateway.worker_health import start_health_server
from tests.gateway.engine.support import make_runtime


def _get(server: Any, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{server.server_address[1]}{path}", timeout=10)


def test_probes_and_metrics(session_factory: Any, keyring: Any, kit_dir: Path, tmp_path: Path) -> None:
    ready = make_runtime(session_factory, keyring, CISIS_KIT_DIR=kit_dir)
    server = start_health_server(ready, "127.0.0.1", 0)
    try:
        assert _get(server, "/healthz").json() == {"status": "ok"}
        answer = _get(server, "/readyz")
        assert answer.status_code == 200, answer.text
        assert answer.json()["checks"]["database"] == {"ok": True}
        ATTEMPTS.labels(connector="health-test", outcome="success").inc()
        metrics = _get(server, "/metrics")
        assert 'dui_gateway_delivery_attempts_total{connector="health-test",outcome="success"}' in metrics.text
        assert _get(server, "/nothing").status_code == 404
    finally:
        server.shutdown()
        server.server_close()
    # without a usable CI-SIS kit documents cannot be checked: the worker is not ready
    unready = make_runtime(session_factory, keyring, CISIS_KIT_DIR=tmp_path / "no-kit")
    server = start_health_server(unready, "127.0.0.1", 0)
    try:
        answer = _get(server, "/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["conformance"]["ok"] is False
        assert _get(server, "/healthz").status_code == 200
    finally:
        server.shutdown()
        server.server_close()
