"""Document types come from the ``dui_gateway.document_types`` entry points, loaded once, lazily."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mappings import registry
from mappings.dlu import DLU
from mappings.ppa import PPA
from mappings.tddui import EXPORT
from tests.support.doctype import NOTE


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty registry that has not read its entry points yet (restored afterwards)."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_loaded", False)


def _install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: str) -> None:
    """A distribution on sys.path declaring extra document type entry points."""
    dist = tmp_path / "extra_doctypes-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-doctypes\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_built_in_document_types_come_from_entry_points(fresh: None) -> None:
    assert registry.codes() == [
        "dlu",
        "inbound-event",
        "indicator-dataset",
        "ppa",
        "sdo-consent",
        "sdo-status",
        "tddui-export",
    ]
    assert registry.public_codes() == [
        "dlu",
        "ppa",
        "sdo-consent",
        "sdo-status",
        "tddui-export",
    ]  # inbound-event and indicator-dataset are the gateway's own
    assert (registry.get("dlu"), registry.get("ppa"), registry.get("tddui-export")) == (DLU, PPA, EXPORT)
    assert DLU.type_code is not None and DLU.type_code.code == "74207-2"
    assert PPA.type_code is not None and PPA.type_code.code == "80788-3"
    assert EXPORT.type_code is None


def test_concurrent_first_lookups_all_see_the_loaded_registry(fresh: None) -> None:
    start = threading.Barrier(8)
    seen: list[object] = []

    def lookup() -> None:
        start.wait()
        seen.append(registry.get("dlu"))

    threads = [threading.Thread(target=lookup) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [DLU] * 8


def test_register_and_unregister_at_run_time_win_over_entry_points(fresh: None) -> None:
    registry.register(NOTE)
    try:
        assert registry.get(NOTE.code) is NOTE
        assert "dlu" in registry.codes()
    finally:
        registry.unregister(NOTE.code)
    assert registry.get(NOTE.code) is None


def test_a_broken_entry_point_stops_loading(fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, monkeypatch, "broken = no_such_module_for_dui_gateway:TYPE")
    with pytest.raises(registry.DocumentTypeLoadError, match="broken"):
        registry.get("dlu")


def test_an_entry_point_must_be_named_after_its_code(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path, monkeypatch, "not-dlu = mappings.dlu:DLU")
    with pytest.raises(registry.DocumentTypeLoadError, match="'dlu'"):
        registry.codes()
