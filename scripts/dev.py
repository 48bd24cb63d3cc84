#!/usr/bin/env python3
"""Project bootstrap: the two commands of the README, runnable with only Python 3.11+.

    python3 scripts/dev.py gateway   # venv + install + CI-SIS kit + migrate SQLite + API/worker + sandbox + demo
    python3 scripts/dev.py test      # venv + install + ruff format + ruff + mypy --strict + pytest

The virtualenv lives in .venv; it is (re)installed only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".installed-pyproject-sha256"


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit("dui-gateway needs Python 3.11 or newer")
    if not PY.exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    if _run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip") != 0:
        sys.exit("pip upgrade failed")
    if _run(PY, "-m", "pip", "install", "--quiet", "-e", ".[test]") != 0:
        sys.exit("installing dui-gateway failed")
    STAMP.write_text(digest)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


INSTALLED_KIT = ROOT / "var" / "cisis-kit"  # where `dui-gateway kit install` puts the pinned kit
SHARED_KIT = ROOT.parent / "shared" / "cisis-kit"  # a copy beside the checkout (offline fallback)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # the CI-SIS kit (data, not shipped in the repository): first folder found, unless set
    candidates = (ROOT / "cisis-kit", INSTALLED_KIT, SHARED_KIT)
    kit = next((c for c in candidates if (c / "schematrons").is_dir()), None)
    if "CISIS_KIT_DIR" not in env and kit is not None:
        env["CISIS_KIT_DIR"] = str(kit)
    return env


def ensure_kit(env: dict[str, str]) -> None:
    """First use: install the pinned CI-SIS kit into var/cisis-kit (``dui-gateway kit install``,
    which verifies it), unless CISIS_KIT_DIR, ./cisis-kit or an installed kit is already there.

    When the download fails (offline) or is refused, the copy in ../shared/cisis-kit is used
    when it exists, and this says so; else the demo says that it cannot run the conformance gate.
    """
    if "CISIS_KIT_DIR" in os.environ or (ROOT / "cisis-kit" / "schematrons").is_dir():
        return
    if (INSTALLED_KIT / ".dui-kit.json").is_file():
        env["CISIS_KIT_DIR"] = str(INSTALLED_KIT)
        return
    if _run(BIN / "dui-gateway", "kit", "install", "--dest", INSTALLED_KIT, env=env) == 0:
        env["CISIS_KIT_DIR"] = str(INSTALLED_KIT)
        return
    if (SHARED_KIT / "schematrons").is_dir():
        env["CISIS_KIT_DIR"] = str(SHARED_KIT)
        print(f"the pinned CI-SIS kit could not be installed: using the copy in {SHARED_KIT} instead", flush=True)
    else:
        env.pop("CISIS_KIT_DIR", None)
        print(
            "no CI-SIS kit: documents cannot be checked, so none will be sent. Set CISIS_KIT_DIR to a copy of the"
            " kit, or run `.venv/bin/dui-gateway kit install --archive FILE` with the pinned archive.",
            flush=True,
        )


def test_env() -> dict[str, str]:
    env = base_env()
    if "DUI_GATEWAY_TEST_PG_URL" not in env and _port_open("127.0.0.1", 5432):
        env["DUI_GATEWAY_TEST_PG_URL"] = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    return env


def ensure_test_packages(without: str = "the MSSanté IMAP and console browser tests will skip") -> None:
    """Debian packages the real peers need (dovecot for the MSSanté IMAP tests and the demo's
    mail sandbox, chromium for the console's browser tests).

    Installed by scripts/install-test-deps.sh when missing and we are root with apt-get;
    otherwise what needs them is skipped (``without`` says what), and this says so.
    """
    script = ROOT / "scripts" / "install-test-deps.sh"
    have_dovecot = shutil.which("dovecot") or Path("/usr/sbin/dovecot").exists()
    have_chromium = Path("/usr/bin/chromium").exists()
    if (have_dovecot and have_chromium) or not script.exists():
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"dovecot or chromium missing: {without} (run scripts/install-test-deps.sh as root)")
        return
    if _run("bash", script) != 0:
        print(f"installing the test packages failed: {without}")


def cmd_test(args: list[str]) -> int:
    """The whole suite: formatting, lint, strict typing, then pytest."""
    ensure_venv()
    ensure_test_packages()
    env = test_env()
    for cmd in (("ruff", "format", "--check", "."), ("ruff", "check", "."), ("mypy",)):
        if _run(PY, "-m", *cmd, env=env) != 0:
            return 1
    return _run(PY, "-m", "pytest", *args, env=env)


def cmd_gateway(args: list[str]) -> int:
    ensure_venv()
    ensure_test_packages("the demo skips its MSSanté part (mail relay + IMAP)")
    env = base_env()
    (ROOT / "var").mkdir(exist_ok=True)
    ensure_kit(env)
    return _run(BIN / "dui-gateway", "demo", *args, env=env)


def main() -> int:
    commands = {"test": cmd_test, "gateway": cmd_gateway}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
