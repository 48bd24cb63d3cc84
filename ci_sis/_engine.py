"""The one saxonche processor of this process, and a lock serialising every use of it.

SaxonC executables are not thread-safe and the processor is process-wide, so all Saxon work
(parse, compile, transform) goes through :data:`ENGINE` under its lock. XSD validation with lxml
and report building happen outside the lock, so a worker pool still overlaps those parts.
"""

from __future__ import annotations

import threading
from typing import Any

from saxonche import PySaxonApiError, PySaxonProcessor


class ValidationRunError(Exception):
    """The validator could not run on a document: there is no verdict, and nothing is said about it.

    An engine or kit failure (an XSLT dynamic error, Saxon failing, a schematron that cannot be
    compiled), never a property of the document: a caller holds the document and tries again later,
    it does not reject it. Content problems are :class:`~ci_sis.Finding` items of the report."""


class SaxonFailure(ValidationRunError):
    """Saxon refused a stylesheet or failed while running it."""


class _Engine:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._proc: Any = None
        self._xslt: Any = None

    def _ensure(self) -> None:
        if self._proc is None:
            self._proc = PySaxonProcessor(license=False)
            self._xslt = self._proc.new_xslt30_processor()

    def compile(self, stylesheet: str) -> Any:
        with self.lock:
            self._ensure()
            try:
                return self._xslt.compile_stylesheet(stylesheet_text=stylesheet)
            except PySaxonApiError as exc:
                raise SaxonFailure(f"stylesheet compilation failed: {exc}") from exc

    def parse(self, xml_text: str) -> Any:
        with self.lock:
            self._ensure()
            try:
                return self._proc.parse_xml(xml_text=xml_text, encoding="UTF-8")
            except PySaxonApiError as exc:
                raise SaxonFailure(f"Saxon could not parse the document: {exc}") from exc

    def parse_file(self, path: str) -> Any:
        with self.lock:
            self._ensure()
            try:
                return self._proc.parse_xml(xml_file_name=path)
            except PySaxonApiError as exc:
                raise SaxonFailure(f"Saxon could not parse {path}: {exc}") from exc

    def set_documents(self, executable: Any, name: str, documents: dict[str, Any]) -> None:
        """Bind a ``map(xs:string, document-node())`` stylesheet parameter."""
        with self.lock:
            self._ensure()
            executable.set_parameter(name, self._proc.make_map2(documents, encoding="UTF-8"))

    def run(self, executable: Any, node: Any) -> str:
        with self.lock:
            try:
                result = executable.transform_to_string(xdm_node=node)
            except PySaxonApiError as exc:
                raise SaxonFailure(f"schematron evaluation failed: {exc}") from exc
            if result is None:
                raise SaxonFailure("schematron evaluation returned no result")
            return str(result)


ENGINE = _Engine()
