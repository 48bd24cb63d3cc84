"""The DMP simulator (HTTPS, mutual TLS, SOAP/MTOM, VIHF, XAdES, metadata rules) and its dev PKI.

- :func:`create_dev_pki` writes a test CA, the simulator's server certificate and an ESSMS
  organisation certificate into a folder (``dui-gateway sandbox dmp-pki``);
- :func:`start_in_process` / :func:`spawn` run the simulator in a thread or as
  ``dui-gateway sandbox dmp``.
"""

from connectors.sandbox.dmp.pki import DevPki, TestCa, create_dev_pki
from connectors.sandbox.dmp.run import SimulatorProcess, spawn, start_in_process
from connectors.sandbox.dmp.server import DmpSimulator

__all__ = ["DevPki", "DmpSimulator", "SimulatorProcess", "TestCa", "create_dev_pki", "spawn", "start_in_process"]
