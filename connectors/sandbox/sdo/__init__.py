"""The SI-SdO (ViaTrajectoire PH) simulator: an HTTPS FHIR server on loopback (see :mod:`.server`).

:func:`start_sdo_sandbox` is what the demo and the tests call: it starts the simulator, enrols
the given ESSMS (an OAuth client each, and a client certificate) and returns the running
simulator with what a gateway needs to talk to it (:class:`SdoSandbox`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.sandbox.sdo.pki import CertPair
from connectors.sandbox.sdo.server import Faults, SdoSimulator

__all__ = ["EnrolledEssms", "Faults", "SdoSandbox", "SdoSimulator", "start_sdo_sandbox"]


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

    def write_credentials(self, directory: Path) -> dict[str, dict[str, str]]:
        """Write each ESSMS's certificate, key and OAuth secret (0600) under ``directory``.

        Returns, per FINESS, the file paths and the client id: what a credentials file
        (``DUI_GATEWAY_CREDENTIALS_FILE``, purpose ``sdo``) or an ``sdo`` source's settings name.
        """
        directory.mkdir(parents=True, exist_ok=True)
        out: dict[str, dict[str, str]] = {}
        for finess, essms in sorted(self.essms.items()):
            files = {
                "certificate": (directory / f"{finess}.crt", essms.certificate.certificate_pem),
                "private_key": (directory / f"{finess}.key", essms.certificate.private_key_pem),
                "client_secret": (directory / f"{finess}.secret", essms.client_secret.encode()),
            }
            entry = {"client_id": essms.client_id}
            for name, (path, data) in files.items():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                entry[name] = str(path)
            out[finess] = entry
        return out

    def gateway_wiring(
        self, *, tenant: str, directory: Path, poll_seconds: float = 5.0, dui_destination: str = "dui"
    ) -> dict[str, Any]:
        """What a gateway needs to use this simulator (for the demo): routing-file sections and
        credentials-file entries, every secret as a ``file:`` reference written under ``directory``.

        ``{"routing": {"sources": ..., "destinations": ..., "rules": ...}, "credentials": [...]}``:
        one ``sdo`` source per enrolled ESSMS (state file under ``directory``), the ``viatrajectoire``
        destination (``sdo`` connector, OAuth2 + mutual TLS), rules sending ``sdo-status`` and
        ``sdo-consent`` to it and ``inbound-event`` to ``dui_destination`` (declared by the caller),
        and one credentials entry (purpose ``sdo``) per ESSMS.
        """
        files = self.write_credentials(directory)
        ca = str(self.ca_file)
        sources: dict[str, Any] = {}
        credentials: list[dict[str, Any]] = []
        for finess, entry in files.items():
            sources[f"viatrajectoire-{finess}"] = {
                "source": "sdo",
                "tenant": tenant,
                "settings": {
                    "base_url": self.base_url,
                    "auth": "oauth",
                    "token_url": self.token_url,
                    "ca_file": ca,
                    "client_id": entry["client_id"],
                    "client_secret": f"file:{entry['client_secret']}",
                    "essms_finess": finess,
                    "state_file": str(directory / f"state-{finess}.json"),
                    "poll_seconds": poll_seconds,
                },
            }
            credentials.append(
                {
                    "tenant": tenant,
                    "essms": finess,
                    "purpose": "sdo",
                    "certificate": f"file:{entry['certificate']}",
                    "private_key": f"file:{entry['private_key']}",
                    "username": entry["client_id"],
                    "password": f"file:{entry['client_secret']}",
                }
            )
        routing = {
            "sources": sources,
            "destinations": {
                "viatrajectoire": {
                    "connector": "sdo",
                    "category": "viatrajectoire",
                    "settings": {
                        "base_url": self.base_url,
                        "auth": "oauth+mtls",
                        "token_url": self.token_url,
                        "ca_file": ca,
                    },
                }
            },
            "rules": [
                {"document_types": ["sdo-status", "sdo-consent"], "destinations": ["viatrajectoire"]},
                {"document_types": ["inbound-event"], "destinations": [dui_destination]},
            ],
        }
        return {"routing": routing, "credentials": credentials}

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
        sandbox.essms[number] = EnrolledEssms(
            number, client.client_id, client.secret, simulator.client_certificate(number)
        )
    simulator.start()
    return sandbox
