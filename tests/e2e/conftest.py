"""End-to-end fixtures: a deployment of real processes under tmp_path, always stopped."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.peers.gateway import Deployment

RECORDS_DIR = Path(__file__).resolve().parents[1] / "resources" / "records"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment.create(tmp_path / "deployment")
    try:
        yield dep
    finally:
        dep.close()


def require_dlu() -> None:
    """The e2e flows post DLUs through real processes: the DLU document type must exist."""
    from mappings import registry

    if registry.get("dlu") is None:
        pytest.fail("mappings.dlu is not available: the end-to-end flows need the DLU document type")


def demo_records() -> list[dict[str, Any]]:
    folder = resources.files("gateway.demo_data")
    return [
        json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]


def sample_submissions() -> list[tuple[str, dict[str, Any]]]:
    """(document type, record) of the sample records of tests/resources/records (DLU and PPA,
    when present) followed by the demo DLU records."""
    out: list[tuple[str, dict[str, Any]]] = []
    if RECORDS_DIR.is_dir():
        for path in sorted(RECORDS_DIR.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            for doc_type in ("dlu", "ppa"):
                if isinstance(data, dict) and doc_type in data:
                    out.append((doc_type, data))
    return out + [("dlu", r) for r in demo_records()]


def with_finess(record: dict[str, Any], finess: str) -> dict[str, Any]:
    rec = copy.deepcopy(record)
    rec["essms"]["finess"] = finess
    rec["essms"].pop("legal_entity_finess", None)
    return rec


def many_dlu(count: int, finess: str) -> list[dict[str, Any]]:
    """``count`` DLU records for distinct persons (demo records with their local id changed)."""
    base = demo_records()
    out = []
    for i in range(count):
        rec = with_finess(base[i % 2], finess)
        rec["person"]["local_id"] = f"E2E-P-{i:05d}"
        out.append(rec)
    return out
