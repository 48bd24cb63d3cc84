"""The SI-SdO (ViaTrajectoire PH) simulator: an HTTPS FHIR server on loopback (see :mod:`.server`).

:func:`start_sdo_sandbox` is what the demo and the tests call: it starts the simulator, enrols
the given ESSMS (an OAuth client each, and a client certificate) and returns the running
simulator with what a gateway needs to talk to it (:class:`SdoSandbox`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from connectors.sandbox.sdo.pki import CertPair
from connectors.sandbox.sdo.server import Faults, SdoSimulator

__all__ = ["Faults", "SdoSandbox", "SdoSimulator", "start_sdo_sandbox"]


@dataclass(frozen=True)
class EnrolledEssms:
    finess: str
    client_id: str
    client_secret: str
    certificate: CertPair


@dataclass
class SdoSandbox:
    """A started simulator and the ESSMS enrolled in it."""

    simulator: SdoSimulator
    essms: dict[str, EnrolledEssms] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.simulator.base_url

    @property
    def token_url(self) -> str:
        return self.simulator.token_url

    @property
    def ca_file(self) -> Path:
        return self.simulator.ca_file

    def stop(self) -> None:
        self.simulator.stop()


def start_sdo_sandbox(
    finess: Iterable[str],
    *,
    port: int = 0,
    auth: str = "either",
    state_dir: Path | None = None,
    quiet: bool = True,
) -> SdoSandbox:
    """Start the simulator on loopback and enrol each FINESS (OAuth client + client certificate)."""
    simulator = SdoSimulator(port=port, auth=auth, state_dir=state_dir, quiet=quiet)
    sandbox = SdoSandbox(simulator)
    for number in finess:
        client = simulator.enroll(number)
        sandbox.essms[number] = EnrolledEssms(number, client.client_id, client.secret, simulator.client_certificate(number))
    simulator.start()
    return sandbox
