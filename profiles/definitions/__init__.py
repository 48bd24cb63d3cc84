"""The registry of declared profiles: canonical URL -> :class:`~profiles._rules.Profile`."""

from __future__ import annotations

from profiles._rules import Profile
from profiles.definitions import fr_core, pdsm, sdo, tddui
from profiles.definitions.base_r4 import base_profile, base_url

__all__ = ["PROFILES", "base_profile", "base_url", "canonical", "chain", "family"]

PROFILES: dict[str, Profile] = {p.url: p for p in (*fr_core.PROFILES, *tddui.PROFILES, *pdsm.PROFILES, *sdo.PROFILES)}
_ALIASES: dict[str, str] = {**tddui.TDDUI_ALIASES, **pdsm.PDSM_ALIASES}

#: conformance tag family -> canonical prefix of its profiles
FAMILIES: dict[str, str] = {
    "tddui": tddui.TDDUI,
    "pdsm": pdsm.PDSM,
    "frcore": fr_core.FR_CORE,
    "sdo": sdo.SDO,
}


def canonical(url: str) -> str:
    """The declared URL for ``url`` (version suffix ``|x.y.z`` dropped, known aliases followed)."""
    bare = url.split("|", 1)[0]
    return _ALIASES.get(bare, bare)


def chain(url: str) -> list[Profile]:
    """``url``'s profile then its ancestors (each once); empty when the profile is not declared."""
    out: list[Profile] = []
    pending = [canonical(url)]
    while pending:
        current = pending.pop(0)
        profile = PROFILES.get(current)
        if profile is None or profile in out:
            continue
        out.append(profile)
        pending.extend(profile.parents)
    return out


def family(url: str) -> str | None:
    """The conformance family ("tddui", "pdsm", "frcore") a profile URL belongs to."""
    bare = canonical(url)
    for name, prefix in FAMILIES.items():
        if bare.startswith(prefix):
            return name
    return None
