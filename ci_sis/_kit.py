"""Locating an ANS CI-SIS test kit (``TestContenuCDA``) on disk and naming its volets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CISIS_KIT_DIR"
N1_VOLET = "CDA-N1"
PROFILE_SCHEMATRONS = (
    "schematrons/profils/CI-SIS_ModelesDeContenusCDA.sch",
    "schematrons/profils/CI-SIS_Modeles_ANS.sch",
)
XSD_PATH = "infrastructure/cda/CDA_extended.xsd"
#: the profiles the ANS pipeline leaves optional (run on request, see ``Validator.validate``)
OPTIONAL_SCHEMATRONS = (
    "schematrons/profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch",
    "schematrons/profils/terminologies/schematron/terminologie.sch",
)


class KitNotFound(Exception):
    """No usable CI-SIS kit at the given path (or CISIS_KIT_DIR is unset)."""


class UnknownVolet(ValueError):
    """The kit has no schematron for this volet."""


@dataclass(frozen=True)
class Kit:
    root: Path

    @classmethod
    def locate(cls, kit_dir: Path | str | None = None) -> Kit:
        if kit_dir is None:
            value = os.environ.get(ENV_VAR)
            if not value:
                raise KitNotFound(f"{ENV_VAR} is not set and no kit directory was given")
            kit_dir = value
        root = Path(kit_dir).expanduser().resolve()
        if not (root / XSD_PATH).is_file() or not (root / "schematrons").is_dir():
            raise KitNotFound(f"{root} is not a CI-SIS kit (expected {XSD_PATH} and schematrons/)")
        for rel in PROFILE_SCHEMATRONS:
            if not (root / rel).is_file():
                raise KitNotFound(f"{root} is not a complete CI-SIS kit: {rel} is missing")
        return cls(root)

    @property
    def xsd(self) -> Path:
        return self.root / XSD_PATH

    def volets(self) -> list[str]:
        """Every volet with a ``schematrons/CI-SIS_<volet>.sch``, plus ``CDA-N1`` (profiles only)."""
        names = sorted(p.name[len("CI-SIS_") : -len(".sch")] for p in (self.root / "schematrons").glob("CI-SIS_*.sch"))
        return [*names, N1_VOLET]

    def schematrons(self, volet: str) -> list[Path]:
        """The schematrons the ANS pipeline applies for ``volet``: its own, then the two transverse profiles."""
        profiles = [self.root / rel for rel in PROFILE_SCHEMATRONS]
        if volet == N1_VOLET:
            return profiles
        own = self.root / "schematrons" / f"CI-SIS_{volet}.sch"
        if "/" in volet or "\\" in volet or not own.is_file():
            raise UnknownVolet(f"no schematron for volet {volet!r} in {self.root}")
        return [own, *profiles]

    def optional_schematrons(self) -> list[Path]:
        """``profils/structurationMinimale`` and ``profils/terminologies`` (those the kit has)."""
        return [self.root / rel for rel in OPTIONAL_SCHEMATRONS if (self.root / rel).is_file()]

    def relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)
