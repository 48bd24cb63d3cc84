"""A document type that exists only in the tests, to drive the engine without the DLU."""

from __future__ import annotations

from typing import ClassVar
from xml.sax.saxutils import escape

from pydantic import BaseModel, ConfigDict, Field

from mappings.base import Code, MappingFailed, RecordFacts, RenderContext, Rendition


class NoteRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    person_ref: str = Field(min_length=1, max_length=64)
    essms_finess: str = Field(pattern=r"^\d{9}$")
    text: str = Field(min_length=1, max_length=10_000)
    ins_qualified: bool = False
    refuse_sharing_with: list[str] = []
    fail_mapping: bool = False  # lets a test make mapping fail on purpose
    series: str | None = None  # several series per person (like one FLUDT per transfer): set by the record


class NoteDocumentType:
    code: ClassVar[str] = "test-note"
    record_model: ClassVar[type[BaseModel]] = NoteRecord
    type_code: ClassVar[Code | None] = None  # the facade shows urn:dui-gateway:document-type|test-note
    class_code: ClassVar[Code | None] = None

    def facts(self, record: BaseModel) -> RecordFacts:
        assert isinstance(record, NoteRecord)
        return RecordFacts(
            person_ref=record.person_ref,
            essms_finess=record.essms_finess,
            ins_qualified=record.ins_qualified,
            sharing_refused_with=frozenset(record.refuse_sharing_with),
        )

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        assert isinstance(record, NoteRecord)
        if record.fail_mapping:
            raise MappingFailed("mapping failed on purpose", pointer="/fail_mapping")
        if record.series is not None:
            wanted = f"{ctx.id_root}.series.{record.series}"
            prev = ctx.previous_of("note", wanted)
            set_id = wanted
        else:
            prev = ctx.previous_of("note")
            set_id = prev.set_id if prev else f"{ctx.id_root}.{ctx.submission_id.int}"
        version = prev.version + 1 if prev else 1
        doc_id = f"{ctx.id_root}^{ctx.submission_id.hex}"
        body = (f'<note xmlns="urn:test" setId="{set_id}" version="{version}">{escape(record.text)}</note>').encode()
        return [
            Rendition(
                kind="note",
                media_type="application/xml",
                content=body,
                document_id=doc_id,
                set_id=set_id,
                version=version,
                replaces=prev.document_id if prev else None,  # None when no version reached anybody
            )
        ]


NOTE = NoteDocumentType()
