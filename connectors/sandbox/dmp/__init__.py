"""The DMP simulator (HTTPS, mutual TLS, SOAP/MTOM, VIHF, XAdES, metadata rules) and its dev PKI."""

from connectors.sandbox.dmp.pki import DevPki, TestCa, create_dev_pki
from connectors.sandbox.dmp.server import DmpSimulator

__all__ = ["DevPki", "DmpSimulator", "TestCa", "create_dev_pki"]
