"""Reporting periods: a month, a quarter or a year of local calendar days, ``[start, end)``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Final

__all__ = ["MAX_YEAR", "MIN_YEAR", "Period"]

MIN_YEAR: Final = 1900
MAX_YEAR: Final = 2199

_RE: Final = re.compile(r"^(\d{4})(?:-(0[1-9]|1[0-2])|-Q([1-4]))?$")


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """``start`` inclusive, ``end`` exclusive; ``code`` is ``2026``, ``2026-Q1`` or ``2026-03``."""

    start: date
    end: date
    code: str

    @classmethod
    def parse(cls, code: str) -> Period:
        m = _RE.match(code)
        if m is None:
            raise ValueError("a period is YYYY, YYYY-Qn or YYYY-MM")
        year = int(m.group(1))
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise ValueError(f"a period's year is {MIN_YEAR} to {MAX_YEAR}")
        if m.group(2):
            return cls.month(year, int(m.group(2)))
        if m.group(3):
            return cls.quarter(year, int(m.group(3)))
        return cls.year(year)

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        return cls(date(year, month, 1), end, f"{year:04d}-{month:02d}")

    @classmethod
    def quarter(cls, year: int, q: int) -> Period:
        first = 3 * (q - 1) + 1
        end = date(year + 1, 1, 1) if q == 4 else date(year, first + 3, 1)
        return cls(date(year, first, 1), end, f"{year:04d}-Q{q}")

    @classmethod
    def year(cls, year: int) -> Period:
        return cls(date(year, 1, 1), date(year + 1, 1, 1), f"{year:04d}")

    @property
    def kind(self) -> str:
        return "month" if "-Q" not in self.code and "-" in self.code else ("quarter" if "-Q" in self.code else "year")

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def months(self) -> list[Period]:
        out: list[Period] = []
        y, m = self.start.year, self.start.month
        while date(y, m, 1) < self.end:
            out.append(Period.month(y, m))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out
