"""Secret references for connector settings: a routing file names a secret, never holds it.

A settings field typed :data:`SecretRef` takes ``env:NAME`` (the environment variable ``NAME``)
or ``file:/path`` (the file's content, trailing newline removed) and resolves it *at validation
time* into a :class:`ResolvedSecret`, a :class:`pydantic.SecretStr` that remembers the
reference::

    class Settings(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)  # a mistaken literal is never echoed
        signing_secrets: tuple[SecretRef, ...] = ()

    Settings.model_validate({"signing_secrets": ["env:DUI_HOOK_SECRET", "file:/run/secrets/hook-old"]})

A literal value is refused (``a secret is given as env:NAME or file:/path, never as its value``),
a missing variable or unreadable file is a validation error naming the *reference*; no message
and no ``repr`` ever holds a secret value. Serialising the model gives the references back
(``model_dump(mode="json")`` round-trips). Python callers may also pass a :class:`SecretStr`
they obtained elsewhere (a credentials provider): it is kept as is, with reference ``<given>``.

Models using it should set ``hide_input_in_errors=True`` so pydantic's own error text never
quotes the input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, SecretStr, WithJsonSchema

__all__ = ["MAX_SECRET_FILE_BYTES", "ResolvedSecret", "SecretRef", "SecretRefError", "resolve_secret_ref"]

MAX_SECRET_FILE_BYTES = 64 * 1024
_GIVEN = "<given>"


class SecretRefError(ValueError):
    """A reference that cannot be resolved; the message names the reference, never a value."""


class ResolvedSecret(SecretStr):
    """A resolved secret and the reference it came from (shown instead of the value)."""

    def __init__(self, secret_value: str, ref: str) -> None:
        super().__init__(secret_value)
        self.ref = ref

    def __repr__(self) -> str:
        return f"ResolvedSecret({self.ref!r})"

    def __str__(self) -> str:
        return self.ref


def _read_file(ref: str, raw: str) -> str:
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise SecretRefError(f"{ref}: a secret file is given by its absolute path")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretRefError(f"{ref}: cannot read the secret file ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretRefError(f"{ref}: the secret file is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretRefError(f"{ref}: the secret file is not UTF-8 text") from None


def resolve_secret_ref(ref: str, *, environ: Any = None) -> ResolvedSecret:
    """Resolve ``env:NAME`` or ``file:/path``; raise :class:`SecretRefError` otherwise."""
    env = os.environ if environ is None else environ
    kind, sep, rest = ref.partition(":")
    if not sep or kind not in ("env", "file") or not rest.strip():
        # the input may be a literal secret pasted by mistake: it is not quoted
        raise SecretRefError("a secret is given as env:NAME or file:/path, never as its value")
    if kind == "env":
        name = rest.strip()
        if name not in env:
            raise SecretRefError(f"{ref}: the environment variable {name} is not set")
        value = str(env[name])
    else:
        value = _read_file(ref, rest.strip())
    if not value.strip():
        raise SecretRefError(f"{ref}: the secret is empty")
    return ResolvedSecret(value, ref)


def _validate(value: Any) -> ResolvedSecret:
    if isinstance(value, ResolvedSecret):
        return value
    if isinstance(value, SecretStr):
        return ResolvedSecret(value.get_secret_value(), _GIVEN)
    if not isinstance(value, str):
        raise SecretRefError("a secret reference is a string: env:NAME or file:/path")
    return resolve_secret_ref(value.strip())


def _serialize(value: SecretStr) -> str:
    return value.ref if isinstance(value, ResolvedSecret) else _GIVEN


SecretRef = Annotated[
    SecretStr,
    PlainValidator(_validate),
    PlainSerializer(_serialize, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^(env|file):.+", "description": "env:NAME or file:/path"}),
]
"""A settings field type: ``env:NAME`` / ``file:/path`` resolved to a :class:`ResolvedSecret`."""
