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
from gateway.credentials import EXPIRY_WARNING_DAYS, audit_expiring, certificate_expiries
from gateway.inbound import give_credentials
from gateway.runtime import Runtime
from gateway.storage.db import snapshot_engine

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving requests."""
    return {"status": "ok"}


def _credentials_check(runtime: Runtime) -> dict[str, Any]:
    """A warning, never a failure: certificates of the ESSMS expired or expiring within 30 days
    (counts only; ``GET /v1/admin/credentials`` names them). Each is audited once a day."""
    try:
        with runtime.session_factory() as session:
            entries = certificate_expiries(session, keyring=runtime.keyring)
            audit_expiring(session, entries)
            session.commit()
    except Exception as exc:  # the database check above reports an outage; do not fail twice
        return {"ok": True, "detail": f"not checked ({type(exc).__name__})"}
    certs = [c for e in entries for c in e["certificates"]]
    soon = sum(1 for c in certs if c.get("expiring_soon"))
    expired = sum(1 for c in certs if c.get("expired"))
    out: dict[str, Any] = {"ok": True, "expiring_soon": soon, "expired": expired}
    if soon or expired:
        out["detail"] = f"{expired} certificate(s) expired, {soon} expiring within {EXPIRY_WARNING_DAYS} days"
    return out


@router.get("/readyz", responses={200: {"description": "ready"}, **problem_responses(503)})
def readyz(request: Request, runtime: RuntimeDep) -> Response:
    """Readiness: the database answers, the conformance gate can run, every destination is healthy."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        with snapshot_engine(runtime.engine).connect() as conn:  # a reader: never waits for a writer
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
    checks["credentials"] = _credentials_check(runtime)
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
