"""Use cases behind the API and the CLI: thin callers pass a Session and keyword arguments.

* :mod:`gateway.services.intake` — validate and store a submission (``submit``);
* :mod:`gateway.services.queries` — the read side (listing, detail, decrypted documents, audit);
* :mod:`gateway.services.operations` — retry, replay, cancel (engine).

Services never commit: the caller (the API's request dependency, a CLI command) owns the
transaction. Modules are imported by their users, not here, so one missing part does not hide
the others.
"""

__all__: list[str] = []
