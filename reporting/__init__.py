"""Activity and performance indicators from stay events: pure functions, no I/O.

``events`` (what happened, versioned), ``timeline`` (stays and days), ``indicators`` (figures of
one ESSMS over one period), ``export`` (the versioned CSV and JSON layouts). Definitions and
sources: docs/indicators.md.
"""

from reporting.events import StayEvent, from_inbound, latest
from reporting.indicators import LAYOUT_VERSION, Capacity, Dataset, Figures, Rules, compute
from reporting.periods import Period

__all__ = [
    "LAYOUT_VERSION",
    "Capacity",
    "Dataset",
    "Figures",
    "Period",
    "Rules",
    "StayEvent",
    "compute",
    "from_inbound",
    "latest",
]
