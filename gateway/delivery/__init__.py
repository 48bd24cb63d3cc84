"""Delivery: the outbox (one owner of delivery rows), the engine (claim, send, finish), bulkheads."""

from gateway.delivery.engine import Backoff, DeliveryOutcome, deliver_next
from gateway.delivery.outbox import ENDED, refresh_submission_status

__all__ = ["ENDED", "Backoff", "DeliveryOutcome", "deliver_next", "refresh_submission_status"]
