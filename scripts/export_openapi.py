#!/usr/bin/env python3
"""Write the API's OpenAPI document to docs/openapi.json (or check that it is up to date).

    .venv/bin/python scripts/export_openapi.py          # regenerate docs/openapi.json
    .venv/bin/python scripts/export_openapi.py --check  # exit 1 when the committed file is stale

The document is built from the application itself (routes, models, and the record schema of
every registered document type), without a database or keys.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "openapi.json"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from gateway.app import openapi_document

    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="do not write; fail if docs/openapi.json is stale")
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current == text:
            print(f"{args.output.relative_to(ROOT)} is up to date")
            return 0
        diff = difflib.unified_diff(current.splitlines(), text.splitlines(), "committed", "generated", lineterm="", n=1)
        print("\n".join(list(diff)[:60]))
        print(f"{args.output} is stale: run `python scripts/export_openapi.py` and commit it", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
