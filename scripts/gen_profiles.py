"""Regenerate profiles/data/generated.json from the IG packages and transcribed differentials.

    python scripts/gen_profiles.py [--packages DIR] [--kit DIR] [--check]

Packages (``*.tgz``, standard FHIR NPM packages) are loaded first, then the folders of
``profiles/sources/`` (hand-transcribed StructureDefinitions, newer than the packages, listed in
``profiles/sources/MANIFEST.json``); a later definition of the same canonical URL wins. Value
sets come from the packages, the transcribed ValueSets and the CI-SIS kit's ``jeuxDeValeurs``.
``--check`` exits 1 when the committed file differs from what would be generated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiles._generator import Library, generate  # noqa: E402

OUTPUT = ROOT / "profiles" / "data" / "generated.json"
SOURCES = ROOT / "profiles" / "sources"


def build(packages: Path, kit: Path) -> str:
    manifest = json.loads((SOURCES / "MANIFEST.json").read_text(encoding="utf-8"))
    lib = Library()
    for name in manifest["packages"]:
        lib.load_package(packages / name)
    for folder in manifest["folders"]:
        lib.load_folder(SOURCES / folder["path"], folder["label"])
    lib.load_jdv(kit / "jeuxDeValeurs")
    data = generate(lib, manifest["profiles"], manifest.get("deviations", []))
    return json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--packages",
        type=Path,
        default=Path(os.environ.get("FHIR_IG_DIR", ROOT.parent / "shared" / "fhir-ig")) / "packages",
    )
    parser.add_argument(
        "--kit", type=Path, default=Path(os.environ.get("CISIS_KIT_DIR", ROOT.parent / "shared" / "cisis-kit"))
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = build(args.packages, args.kit)
    if args.check:
        return 0 if OUTPUT.read_text(encoding="utf-8") == text else 1
    OUTPUT.write_text(text, encoding="utf-8")
    data = json.loads(text)
    unavailable = [url for url, vs in data["valuesets"].items() if not vs["available"]]
    print(
        f"{len(data['profiles'])} profiles, {sum(len(p['rules']) for p in data['profiles'])} rules, "
        f"{len(data['valuesets'])} value sets ({len(unavailable)} without a code list)"
    )
    for url in unavailable:
        print("  no code list:", url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
