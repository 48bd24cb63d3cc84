"""Destinations: the Connector protocol, its errors, and one subpackage per peer."""

from connectors.base import (
    Connector,
    ConnectorError,
    Envelope,
    Health,
    PermanentError,
    Receipt,
    TransientError,
)

__all__ = ["Connector", "ConnectorError", "Envelope", "Health", "PermanentError", "Receipt", "TransientError"]
