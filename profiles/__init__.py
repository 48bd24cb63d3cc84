"""FHIR conformance for what the gateway emits and accepts (FR Core, TDDUI, PDSm/MHD)."""
