"""FHIR R4 over REST: the generic ``fhir`` connector and the pieces the SI-SdO connector shares.

- :class:`FhirConnector` (``dui_gateway.connectors`` entry point ``fhir``): Bundles and resources
  to any FHIR R4 server, with conditional operations and OperationOutcome mapping;
- :mod:`connectors.fhir.client`, :mod:`connectors.fhir._http`, :mod:`connectors.fhir._oauth`:
  the REST client, bounded/hostile-safe JSON, OperationOutcome → error, OAuth token cache.
"""

from connectors.fhir.connector import FhirConnector, FhirOAuth, FhirSettings

__all__ = ["FhirConnector", "FhirOAuth", "FhirSettings"]
