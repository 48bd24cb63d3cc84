"""ViaTrajectoire PH (SI-SdO) through the ANS "Suivi des décisions d'orientation" IG (FHIR R4).

- :class:`SdoSource` (``dui_gateway.sources`` entry point ``sdo``): polls the ESSMS's decisions
  (flux 1) and optionally the statuses (flux 5) into ``sdo.decision`` / ``sdo.status`` events;
- :class:`SdoConnector` (``dui_gateway.connectors`` entry point ``sdo``): sends the ESSMS's
  answers, ``sdo-consent`` (flux 2, Consent) and ``sdo-status`` (flux 4, Task).

See docs/viatrajectoire.md.
"""

from connectors.sdo.connector import SdoConnector, SdoConnectorSettings
from connectors.sdo.source import SdoSource, SdoSourceSettings

__all__ = ["SdoConnector", "SdoConnectorSettings", "SdoSource", "SdoSourceSettings"]
