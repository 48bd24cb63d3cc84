"""Small, process-wide caches of rows that never change once written.

A tenant's ``code`` is set when the tenant is created and never updated (tenants are not
deleted either), so each process reads it once instead of once per document (issue 15).
"""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.storage.models import Tenant

__all__ = ["tenant_code"]

_MAX_ENTRIES = 10_000
_codes: dict[str, str] = {}
_lock = threading.Lock()


def tenant_code(session: Session, tenant_id: str) -> str | None:
    """The tenant's code (None if there is no such tenant; not cached then)."""
    code = _codes.get(tenant_id)
    if code is not None:
        return code
    code = session.scalar(select(Tenant.code).where(Tenant.id == tenant_id))
    if code is not None:
        with _lock:
            if len(_codes) >= _MAX_ENTRIES:
                _codes.clear()
            _codes[tenant_id] = code
    return code
