"""The exported layouts of a :class:`~reporting.indicators.Dataset` (version ``LAYOUT_VERSION``).

* JSON: :meth:`Dataset.as_json` (documented field by field in docs/indicators.md).
* CSV: one row per figure, "long" so that a new figure is a new row, never a new column:
  ``layout_version,finess,period,accommodation,indicator,breakdown,value``; ``accommodation``
  is ``all`` for the totals, ``breakdown`` is empty or the key of a breakdown (``death``,
  ``F``, ``75-84``, ``GIR2``...), ``value`` is empty when the figure is undefined (no places,
  no exits). Comma-separated, UTF-8, ``\\r\\n`` line ends (RFC 4180).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from reporting.indicators import TOTAL, Dataset

__all__ = ["CSV_COLUMNS", "to_csv", "to_json_bytes"]

CSV_COLUMNS = ("layout_version", "finess", "period", "accommodation", "indicator", "breakdown", "value")


def _value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))
    return str(v)


def _rows(ds: Dataset) -> Iterable[list[str]]:
    groups = [(TOTAL, ds.totals), *sorted(ds.by_accommodation.items())]
    for name, fig in groups:
        for indicator, value in asdict(fig).items():
            if isinstance(value, dict):
                for key, n in value.items():
                    yield [ds.layout_version, ds.finess, ds.period.code, name, indicator, str(key), _value(n)]
            else:
                yield [ds.layout_version, ds.finess, ds.period.code, name, indicator, "", _value(value)]
    for indicator in ("unit_transfers", "same_day_readmissions", "anomalies", "events_used"):
        yield [ds.layout_version, ds.finess, ds.period.code, TOTAL, indicator, "", str(getattr(ds, indicator))]


def to_csv(datasets: Iterable[Dataset]) -> str:
    """The datasets as one CSV document (header first)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for ds in datasets:
        writer.writerows(_rows(ds))
    return out.getvalue()


def to_json_bytes(datasets: Iterable[Dataset]) -> bytes:
    """The datasets as a JSON document ``{"layout_version": ..., "datasets": [...]}``."""
    items = [ds.as_json() for ds in datasets]
    body = {"layout_version": items[0]["layout_version"] if items else "1.0", "datasets": items}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
