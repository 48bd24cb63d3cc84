"""The delivery engine: outbox claims, sends outside transactions, retries, dead letters, ordering."""

from gateway.delivery.engine import TERMINAL, Backoff, DeliveryOutcome, deliver_next, refresh_submission_status

__all__ = ["TERMINAL", "Backoff", "DeliveryOutcome", "deliver_next", "refresh_submission_status"]
