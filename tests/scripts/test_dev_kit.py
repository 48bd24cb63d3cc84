"""``python3 scripts/dev.py gateway`` on first use: installs the pinned kit with
``dui-gateway kit install``, else falls back to ``../shared/cisis-kit`` with a message. The
``dui-gateway`` it runs is a stand-in script here (the real command is tested in
tests/ci_sis/test_kit_install.py); the folders are temporary ones."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exit_code: int) -> tuple[ModuleType, Path]:
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "scripts" / "dev.py")
    assert spec is not None and spec.loader is not None
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    checkout = tmp_path / "checkout"
    (checkout / "var").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    script = bin_dir / "dui-gateway"
    # the stand-in records its arguments; on success it leaves an installed kit (its marker)
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{calls}"\n'
        f'[ {exit_code} -eq 0 ] && mkdir -p "$4/schematrons" && echo {{}} > "$4/.dui-kit.json"\n'
        f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(dev, "ROOT", checkout)
    monkeypatch.setattr(dev, "BIN", bin_dir)
    monkeypatch.setattr(dev, "INSTALLED_KIT", checkout / "var" / "cisis-kit")
    monkeypatch.setattr(dev, "SHARED_KIT", tmp_path / "shared" / "cisis-kit")
    monkeypatch.delenv("CISIS_KIT_DIR", raising=False)
    return dev, calls


@pytest.mark.skipif(os.name != "posix", reason="the stand-in is a shell script")
def test_first_use_installs_the_kit_then_uses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev, calls = load_dev(tmp_path, monkeypatch, exit_code=0)
    env: dict[str, str] = {}
    dev.ensure_kit(env)
    assert env["CISIS_KIT_DIR"] == str(dev.INSTALLED_KIT)
    assert calls.read_text().split() == ["kit", "install", "--dest", str(dev.INSTALLED_KIT)]
    env = {}
    dev.ensure_kit(env)  # installed: not run again
    assert env["CISIS_KIT_DIR"] == str(dev.INSTALLED_KIT) and len(calls.read_text().splitlines()) == 1


@pytest.mark.skipif(os.name != "posix", reason="the stand-in is a shell script")
def test_offline_it_says_so_and_uses_the_shared_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dev, calls = load_dev(tmp_path, monkeypatch, exit_code=3)
    (dev.SHARED_KIT / "schematrons").mkdir(parents=True)
    env: dict[str, str] = {}
    dev.ensure_kit(env)
    assert env["CISIS_KIT_DIR"] == str(dev.SHARED_KIT)
    assert "could not be installed: using the copy in" in capsys.readouterr().out
    assert calls.read_text().startswith("kit install") and not dev.INSTALLED_KIT.exists()


@pytest.mark.skipif(os.name != "posix", reason="the stand-in is a shell script")
def test_without_any_kit_it_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dev, _calls = load_dev(tmp_path, monkeypatch, exit_code=3)
    env = {"CISIS_KIT_DIR": "stale value from base_env"}
    dev.ensure_kit(env)
    assert "CISIS_KIT_DIR" not in env
    assert "kit install --archive" in capsys.readouterr().out


def test_an_explicit_kit_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev, calls = load_dev(tmp_path, monkeypatch, exit_code=0)
    monkeypatch.setenv("CISIS_KIT_DIR", str(tmp_path / "mine"))
    env = {"CISIS_KIT_DIR": str(tmp_path / "mine")}
    dev.ensure_kit(env)
    assert env == {"CISIS_KIT_DIR": str(tmp_path / "mine")} and not calls.exists()
