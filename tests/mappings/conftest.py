"""Fixtures for the mapping tests: sample records, a fixed render context, the CI-SIS validator."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mappings.base import RenderContext
from mappings.record import DluRecord

RECORDS = Path(__file__).resolve().parents[1] / "resources" / "records"
GOLDEN = Path(__file__).resolve().parents[1] / "resources" / "golden"
# The DLU sample records (other document types keep their samples in the same folder).
SAMPLES = ["accented_names", "minimal", "not_qualified", "rich", "transfer_minimal", "xml_specials"]

DLU_VOLET = "DLU-EHPAD-DLU_2022.01"
FLUDT_VOLET = "DLU-EHPAD-FLUDT_2022.01"


def record_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def load_record(name: str) -> DluRecord:
    return DluRecord.model_validate(record_json(name))


def fixed_ctx(seed: int = 42, **kwargs: Any) -> RenderContext:
    return RenderContext(now=datetime(2025, 3, 1, 9, 30, tzinfo=UTC), submission_id=uuid.UUID(int=seed), **kwargs)


@pytest.fixture(scope="session")
def validator(kit_dir: Path) -> Any:
    from ci_sis import load_validator

    found = load_validator(kit_dir)
    found.prepare(DLU_VOLET)
    found.prepare(FLUDT_VOLET)
    return found
