"""``dui-gateway --help`` starts fast: it imports no heavy module (the database layer, pydantic
settings, lxml/Saxon, FastAPI, rich); a sub-command is imported when it runs. The help it prints
lists every sub-command with the same one-line help as the sub-command itself."""

from __future__ import annotations

import subprocess
import sys
import time

import typer
from typer.testing import CliRunner

from gateway import cli

HEAVY = ("sqlalchemy", "pydantic", "pydantic_settings", "lxml", "saxonche", "fastapi", "rich", "uvicorn", "profiles")


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['dui-gateway', '--help']\n"
        "from gateway.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    assert "serve" in done.stdout and "cisis" in done.stdout
    assert elapsed < 1.0, f"dui-gateway --help took {elapsed:.2f}s"


def test_the_listed_help_is_each_sub_command_s_own() -> None:
    for entry in cli.SUBCOMMANDS:
        command = cli.load(entry)
        assert command is not None, entry.name
        own = (command.help or "").strip().splitlines()[0]
        assert entry.help == own, (entry.name, entry.help, own)


def test_sub_commands_still_run() -> None:
    result = CliRunner().invoke(cli.app, ["keys", "generate", "k-test"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("k-test:")
    assert CliRunner().invoke(cli.app, ["no-such-command"]).exit_code == 2
    assert isinstance(cli.app, typer.Typer)
