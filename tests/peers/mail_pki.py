"""The test PKI now lives in :mod:`connectors.sandbox.mail.pki` (the demo uses it too)."""

from connectors.sandbox.mail.pki import DevPki, Issued, TestPki

__all__ = ["DevPki", "Issued", "TestPki"]
