"""PDF/A renderings of DUI records (the body of CDA level-1 documents)."""

from mappings.pdf._pdfa import PdfAInfo, canvas_maker, document_id, srgb_icc_profile
from mappings.pdf.ppa import french_date, render_ppa_pdf

__all__ = ["PdfAInfo", "canvas_maker", "document_id", "french_date", "render_ppa_pdf", "srgb_icc_profile"]
