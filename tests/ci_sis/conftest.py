"""Fixtures for the CI-SIS validator tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_sis import Validator, load_validator


@pytest.fixture(scope="session")
def validator(kit_dir: Path) -> Validator:
    return load_validator(kit_dir)


@pytest.fixture(scope="session")
def examples(kit_dir: Path) -> Path:
    return kit_dir / "ExemplesCDA"
