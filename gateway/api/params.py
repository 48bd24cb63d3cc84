"""Query parameter types shared by the routers: bounded so no value reaches the database or the
clock arithmetic it cannot hold (a precise 4xx naming the parameter, never a 500).

- :data:`IsoDatetime`: ISO 8601 only (a bare number, which pydantic would read as a Unix time,
  is refused), naive values are UTC, and the instant must exist in UTC between years 1 and 9999
  (``0001-01-01T00:00+14:00`` does not);
- :data:`MAX_INT64`: the upper bound of every integer parameter (keys, offsets, sequence numbers).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

__all__ = ["MAX_INT64", "IsoDatetime", "to_utc_checked"]

MAX_INT64 = 2**63 - 1
_NUMBER_RE = re.compile(r"\s*[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?\s*")


def _iso_only(value: Any) -> Any:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER_RE.fullmatch(value)):
        raise ValueError("an ISO 8601 date-time is expected (e.g. 2026-01-31T08:00:00+01:00), not a number")
    return value


def to_utc_checked(value: datetime) -> datetime:
    """The same instant in UTC (naive = UTC); ValueError when it falls outside years 1..9999 in UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the date-time is out of range once converted to UTC (years 1 to 9999)") from None


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(to_utc_checked)]
