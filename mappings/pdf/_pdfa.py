"""A reportlab canvas that writes PDF/A-2b, deterministically.

ReportLab (open-source) writes the page content; this module adds what PDF/A-2 (ISO 19005-2,
conformance level B) asks of the document around it:

- every font embedded: only TrueType fonts shipped inside reportlab (Bitstream Vera) are registered,
  and the canvas' initial font is one of them (no reference to a standard-14 font);
- an ``/OutputIntents`` entry (``GTS_PDFA1``) carrying an sRGB ICC profile, all colours being DeviceRGB;
- an XMP metadata stream (uncompressed) with ``pdfaid:part=2``/``pdfaid:conformance=B`` whose Dublin
  Core / XMP / PDF properties equal the document information dictionary;
- a document language (``/Lang``) and a trailer ``/ID``;
- no encryption, no JavaScript, no external content.

Nothing reads the clock or draws random numbers: creation date and document ID are parameters,
so the same input gives the same bytes (golden hashes stay stable).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from xml.sax.saxutils import escape

from PIL import ImageCms
from reportlab.lib.utils import TimeStamp
from reportlab.pdfbase import pdfdoc, pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

__all__ = ["FONT", "FONT_BOLD", "FONT_ITALIC", "PdfAInfo", "canvas_maker", "srgb_icc_profile"]

FONT = "PpaVera"
FONT_BOLD = "PpaVera-Bold"
FONT_ITALIC = "PpaVera-Italic"

_PRODUCER = "dui-gateway (ReportLab)"


def _register_fonts() -> None:
    # Vera ships with reportlab (reportlab/fonts/Vera*.ttf): always present, covers French (é, œ, «, », €).
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    pdfmetrics.registerFont(TTFont(FONT, "Vera.ttf"))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, "VeraBd.ttf"))
    pdfmetrics.registerFont(TTFont(FONT_ITALIC, "VeraIt.ttf"))
    pdfmetrics.registerFont(TTFont(FONT + "-BoldItalic", "VeraBI.ttf"))
    pdfmetrics.registerFontFamily(
        FONT, normal=FONT, bold=FONT_BOLD, italic=FONT_ITALIC, boldItalic=FONT + "-BoldItalic"
    )


_register_fonts()


@cache
def srgb_icc_profile() -> bytes:
    """An sRGB ICC profile (little CMS through Pillow) with a fixed header date, so its bytes are stable."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    data = bytearray(profile.tobytes())
    # ICC header: bytes 24-35 = creation date/time (set to 2000-01-01T00:00:00), 84-99 = profile ID (0 = not computed)
    data[24:36] = bytes([0x07, 0xD0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    data[84:100] = bytes(16)
    return bytes(data)


@dataclass(frozen=True)
class PdfAInfo:
    """Document information, written both in the Info dictionary and in the XMP packet."""

    title: str
    author: str
    subject: str
    keywords: str
    created: datetime  # timezone-aware; written in UTC
    document_id: bytes  # 16 bytes: both halves of the trailer /ID
    lang: str = "fr-FR"
    creator: str = "dui-gateway"


def _timestamp(when: datetime) -> TimeStamp:
    utc = when.astimezone(UTC).replace(microsecond=0)
    stamp = TimeStamp(invariant=1)
    stamp.t = utc.timestamp()
    stamp.lt = time.gmtime(stamp.t)
    stamp.YMDhms = tuple(stamp.lt)[:6]
    stamp.dhh = 0
    stamp.dmm = 0
    stamp.tzname = "UTC"
    return stamp


def _xmp(info: PdfAInfo) -> str:
    when = info.created.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    uuid_hex = info.document_id.hex()
    doc_uuid = f"uuid:{uuid_hex[:8]}-{uuid_hex[8:12]}-{uuid_hex[12:16]}-{uuid_hex[16:20]}-{uuid_hex[20:32]}"
    lang = escape(info.lang)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '<rdf:Description rdf:about=""\n'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        ' xmlns:pdf="http://ns.adobe.com/pdf/1.3/"\n'
        ' xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"\n'
        ' xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">\n'
        "<dc:format>application/pdf</dc:format>\n"
        f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(info.title)}</rdf:li></rdf:Alt></dc:title>\n'
        f"<dc:creator><rdf:Seq><rdf:li>{escape(info.author)}</rdf:li></rdf:Seq></dc:creator>\n"
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(info.subject)}</rdf:li></rdf:Alt>'
        "</dc:description>\n"
        f"<dc:language><rdf:Bag><rdf:li>{lang}</rdf:li></rdf:Bag></dc:language>\n"
        f"<xmp:CreateDate>{when}</xmp:CreateDate>\n"
        f"<xmp:ModifyDate>{when}</xmp:ModifyDate>\n"
        f"<xmp:MetadataDate>{when}</xmp:MetadataDate>\n"
        f"<xmp:CreatorTool>{escape(info.creator)}</xmp:CreatorTool>\n"
        f"<pdf:Producer>{escape(_PRODUCER)}</pdf:Producer>\n"
        f"<pdf:Keywords>{escape(info.keywords)}</pdf:Keywords>\n"
        "<pdf:Trapped>False</pdf:Trapped>\n"
        f"<xmpMM:DocumentID>{doc_uuid}</xmpMM:DocumentID>\n"
        f"<xmpMM:InstanceID>{doc_uuid}</xmpMM:InstanceID>\n"
        "<pdfaid:part>2</pdfaid:part>\n"
        "<pdfaid:conformance>B</pdfaid:conformance>\n"
        "</rdf:Description>\n"
        "</rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )


class _PdfACatalog(pdfdoc.PDFCatalog):  # type: ignore[misc]
    """The document catalog, allowed to carry /OutputIntents (reportlab's catalog does not list it)."""

    __NoDefault__ = (*pdfdoc.PDFCatalog.__NoDefault__, "OutputIntents")
    __Refs__ = tuple(pdfdoc.PDFCatalog.__Refs__)


class _MetadataStream(pdfdoc.PDFStream):  # type: ignore[misc]
    """The XMP metadata stream, never filtered (PDF/A: the metadata stream has no /Filter)."""

    def __init__(self, xmp: bytes) -> None:
        super().__init__(
            dictionary=pdfdoc.PDFDictionary({"Type": pdfdoc.PDFName("Metadata"), "Subtype": pdfdoc.PDFName("XML")}),
            content=xmp + b"\n",
        )

    def format(self, document: Any) -> bytes:
        dictionary = pdfdoc.PDFDictionary(dict(self.dictionary.dict))
        dictionary["Length"] = len(self.content)
        head = bytes(pdfdoc.format(dictionary, document))
        return head + b"\nstream\n" + bytes(self.content) + b"endstream\n"


def _output_intent(doc: Any) -> pdfdoc.PDFDictionary:
    icc = pdfdoc.PDFStream(
        dictionary=pdfdoc.PDFDictionary({"N": 3, "Alternate": pdfdoc.PDFName("DeviceRGB")}),
        content=srgb_icc_profile(),
    )
    return pdfdoc.PDFDictionary(
        {
            "Type": pdfdoc.PDFName("OutputIntent"),
            "S": pdfdoc.PDFName("GTS_PDFA1"),
            "OutputConditionIdentifier": pdfdoc.PDFString("sRGB IEC61966-2.1"),
            "RegistryName": pdfdoc.PDFString("http://www.color.org"),
            "Info": pdfdoc.PDFString("sRGB IEC61966-2.1"),
            "DestOutputProfile": doc.Reference(icc),
        }
    )


def canvas_maker(info: PdfAInfo) -> type[Canvas]:
    """A Canvas class (for ``SimpleDocTemplate.build(canvasmaker=...)``) producing PDF/A-2b with ``info``."""
    if len(info.document_id) != 16:
        raise ValueError("document_id must be 16 bytes")
    if info.created.tzinfo is None:
        raise ValueError("created must be timezone-aware")

    class PdfACanvas(Canvas):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["invariant"] = 1
            kwargs["initialFontName"] = FONT
            kwargs["lang"] = info.lang
            kwargs["enforceColorSpace"] = "rgb"
            kwargs["pdfVersion"] = (1, 7)
            super().__init__(*args, **kwargs)
            doc = self._doc
            old = doc.Catalog
            catalog = _PdfACatalog()
            for name, value in vars(old).items():
                setattr(catalog, name, value)
            doc.Catalog = doc._catalog = catalog
            doc._timeStamp = _timestamp(info.created)
            id_text = pdfdoc.PDFText(info.document_id, enc="raw").format(pdfdoc.DummyDoc())
            doc._ID = b"\n[" + id_text + id_text + b"]\n"
            xmp_bytes = _xmp(info).encode("utf-8")
            catalog.Metadata = _MetadataStream(xmp_bytes)
            catalog.OutputIntents = pdfdoc.PDFArray([_output_intent(doc)])
            self._doc.setTitle(info.title)
            self._doc.setAuthor(info.author)
            self._doc.setSubject(info.subject)
            self._doc.setCreator(info.creator)
            self._doc.setProducer(_PRODUCER)
            self._doc.setKeywords(info.keywords)

        # The document information must equal the XMP packet (PDF/A): callers cannot change it.
        def setTitle(self, title: Any) -> None:
            return None

        def setAuthor(self, author: Any) -> None:
            return None

        def setSubject(self, subject: Any) -> None:
            return None

        def setCreator(self, creator: Any) -> None:
            return None

        def setProducer(self, producer: Any) -> None:
            return None

        def setKeywords(self, keywords: Any) -> None:
            return None

    return PdfACanvas


def document_id(seed: str) -> bytes:
    """A stable 16-byte PDF document ID derived from ``seed`` (e.g. the CDA document id)."""
    return hashlib.sha256(seed.encode("utf-8")).digest()[:16]
