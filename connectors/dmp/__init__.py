"""Mon espace santé / DMP connector (IHE XDS.b ITI-41/ITI-18, or PDSm ITI-65)."""

from connectors.dmp.connector import DmpConnector, DmpRefused, DmpSettings

__all__ = ["DmpConnector", "DmpRefused", "DmpSettings"]
