"""``/healthz`` (the process answers) and ``/readyz`` (database, conformance gate, destinations)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from connectors.base import Health
from gateway.api.deps import RuntimeDep
from gateway.api.problems import PROBLEM_BASE, problem_response, problem_responses
from gateway.conformance import gate_problems
from gateway.inbound import give_credentials

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving requests."""
    return {"status": "ok"}


@router.get("/readyz", responses={200: {"description": "ready"}, **problem_responses(503)})
def readyz(request: Request, runtime: RuntimeDep) -> Response:
    """Readiness: the database answers, the conformance gate can run, every destination is healthy."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:  # any driver error means "not ready"; the type is enough
        checks["database"] = {"ok": False, "detail": type(exc).__name__}
    # Documents whose conformance cannot be checked are never sent: not ready until the gate can run.
    gate = gate_problems(runtime.settings)
    checks["conformance"] = {"ok": not gate, "detail": "; ".join(gate)} if gate else {"ok": True}
    circuits = runtime.bulkheads.snapshot()
    for name, health in sorted(runtime.health().items()):
        checks[f"destination:{name}"] = {"ok": health.ok, "detail": health.detail}
        lane = circuits.get(name)
        if lane is not None:
            # an open circuit: the gateway stopped sending there for a while (consecutive failures)
            checks[f"circuit:{name}"] = {"ok": lane["circuit"] != "open", **lane}
    for name, configured in sorted(runtime.sources.items()):
        try:
            give_credentials(runtime, configured)
            health = configured.source.health()
        except Exception as exc:  # health() must not raise; be defensive anyway
            health = Health(ok=False, detail=type(exc).__name__)
        checks[f"source:{name}"] = {"ok": health.ok, "detail": health.detail}
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    if failing:
        return problem_response(
            request,
            status=503,
            title="Not ready",
            detail=f"failing checks: {', '.join(failing)}",
            type_uri=PROBLEM_BASE + "not-ready",
            extra={"checks": checks},
        )
    return JSONResponse({"status": "ready", "checks": checks})
