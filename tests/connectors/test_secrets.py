"""connectors._secrets: references resolve at validation time; no value in any message or repr."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from connectors._secrets import ResolvedSecret, SecretRef, SecretRefError, resolve_secret_ref

VALUE = "Zq9-very-secret-value"


class _Model(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    secret: SecretRef
    more: tuple[SecretRef, ...] = ()


def test_env_and_file_references_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUI_TEST_SECRET", VALUE)
    path = tmp_path / "s"
    path.write_text(VALUE + "\n", encoding="utf-8")
    m = _Model.model_validate({"secret": "env:DUI_TEST_SECRET", "more": [f"file:{path}"]})
    assert m.secret.get_secret_value() == VALUE == m.more[0].get_secret_value()
    assert isinstance(m.secret, ResolvedSecret) and m.secret.ref == "env:DUI_TEST_SECRET"
    for shown in (repr(m), str(m), m.model_dump_json(), str(m.model_dump())):
        assert VALUE not in shown
    assert m.model_dump(mode="json") == {"secret": "env:DUI_TEST_SECRET", "more": [f"file:{path}"]}
    # a SecretStr handed over by Python code (a credentials provider) is kept
    assert _Model(secret=SecretStr(VALUE)).secret.get_secret_value() == VALUE


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (VALUE, "never as its value"),
        ("env:", "never as its value"),
        ("vault:x", "never as its value"),
        ("env:DUI_TEST_MISSING", "DUI_TEST_MISSING is not set"),
        ("env:DUI_TEST_EMPTY", "is empty"),
        ("file:relative/path", "absolute path"),
        ("file:/nonexistent/dir/secret", "cannot read the secret file"),
        (12345, "is a string"),
    ],
)
def test_mistakes_name_the_reference_never_the_value(
    monkeypatch: pytest.MonkeyPatch, given: object, message: str
) -> None:
    monkeypatch.delenv("DUI_TEST_MISSING", raising=False)
    monkeypatch.setenv("DUI_TEST_EMPTY", "  ")
    with pytest.raises(ValidationError) as info:
        _Model.model_validate({"secret": given})
    assert message in str(info.value)
    assert VALUE not in str(info.value)


def test_files_are_bounded_and_text(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (65 * 1024))
    with pytest.raises(SecretRefError, match="larger than"):
        resolve_secret_ref(f"file:{big}")
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SecretRefError, match="not UTF-8"):
        resolve_secret_ref(f"file:{binary}")
