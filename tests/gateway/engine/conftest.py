"""Engine fixtures: the test-only document type is registered for the duration of each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mappings import registry
from tests.support.doctype import NOTE


@pytest.fixture(autouse=True)
def _note_document_type() -> Iterator[None]:
    registry.register(NOTE)
    try:
        yield
    finally:
        registry.unregister(NOTE.code)
