"""``python -m bench``: the throughput table of issue #15 (see bench/suite.py)."""

from __future__ import annotations

import sys

from bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
