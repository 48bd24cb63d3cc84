"""The project's shared reference data (``../shared`` beside the checkout: FHIR examples, IG
packages, the CI-SIS kit, HL7 v2 examples), or ``DUI_GATEWAY_SHARED_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED"]

SHARED = Path(os.environ.get("DUI_GATEWAY_SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")
