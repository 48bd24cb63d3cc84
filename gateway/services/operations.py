"""Operator actions on submissions and deliveries: retry, replay, cancel (each audited).

The caller (an API route or the CLI) owns the session and its transaction. ``tenant_id`` limits
the action to one tenant's data (a row of another tenant is reported as not found); ``None``
means an operator acting across tenants. The rules live with the delivery rows' one owner,
:mod:`gateway.delivery.outbox`.
"""

from __future__ import annotations

from gateway.delivery.outbox import cancel_submission, replay_submission, retry_delivery

__all__ = ["cancel_submission", "replay_submission", "retry_delivery"]
