"""The ``indicator-dataset`` document type: one ESSMS's activity indicators for one period.

Internal (created by the gateway from ``POST /v1/essms/{finess}/indicators/{period}/report`` or
``dui-gateway indicators report``, never posted as a record), so a period's dataset is routed
(routing rules name ``indicator-dataset``), delivered with retries and audited like any
document. The record is the dataset JSON (layout ``reporting.LAYOUT_VERSION``, aggregates only:
no person reference, no birth date); its one rendition, kind ``indicators``, is that JSON. A
period reported again (after a correction) is the next version of the same series
(``urn:dui-gateway:indicators:<FINESS>:<period>``), replacing the previous one.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mappings.base import Code, RecordFacts, RenderContext, Rendition

__all__ = ["INDICATOR_DATASET", "IndicatorDatasetRecord", "series_of"]


class IndicatorDatasetRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    essms_finess: str = Field(pattern=r"^[0-9A-B]{9}$")
    period: str = Field(pattern=r"^\d{4}(-(0[1-9]|1[0-2])|-Q[1-4])?$")
    layout_version: str = Field(pattern=r"^\d+\.\d+$")
    dataset: dict[str, Any]


def series_of(finess: str, period: str) -> str:
    return f"urn:dui-gateway:indicators:{finess}:{period}"


class IndicatorDatasetType:
    code: ClassVar[str] = "indicator-dataset"
    record_model: ClassVar[type[BaseModel]] = IndicatorDatasetRecord
    internal: ClassVar[bool] = True
    type_code: ClassVar[Code | None] = None  # not a clinical document
    class_code: ClassVar[Code | None] = None

    def facts(self, record: BaseModel) -> RecordFacts:
        assert isinstance(record, IndicatorDatasetRecord)
        # about an ESSMS, not a person: the "person" of the series is the ESSMS and period
        return RecordFacts(
            person_ref=f"essms:{record.essms_finess}:{record.period}",
            essms_finess=record.essms_finess,
            extra={"period": record.period, "layout_version": record.layout_version},
        )

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        assert isinstance(record, IndicatorDatasetRecord)
        set_id = series_of(record.essms_finess, record.period)
        previous = ctx.previous_of("indicators", set_id)
        version = previous.version + 1 if previous is not None else 1
        content = json.dumps(record.dataset, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return [
            Rendition(
                kind="indicators",
                media_type="application/json",
                content=content.encode("utf-8"),
                document_id=f"urn:uuid:{ctx.submission_id}",
                set_id=set_id,
                version=version,
                replaces=previous.document_id if previous is not None else None,
            )
        ]


INDICATOR_DATASET = IndicatorDatasetType()  # declared in the dui_gateway.document_types entry-point group
