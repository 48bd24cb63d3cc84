"""CI-SIS CDA conformance: XSD + ISO Schematron compiled by our own compiler, run with saxonche."""
