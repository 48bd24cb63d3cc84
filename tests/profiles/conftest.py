"""Print the mutation coverage of the generated constraints at the end of the run."""

from __future__ import annotations

from typing import Any

COVERAGE: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if COVERAGE:
        terminalreporter.write_sep("-", "profiles: mutation coverage of the generated constraints")
        terminalreporter.write_line(COVERAGE[-1])
