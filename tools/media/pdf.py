"""PDF pages as text with their page numbers, and as PNG images for a model that can see.

Text comes from pypdf (milliseconds a page); page images from poppler's `pdftoppm`
(a Debian package that install.sh installs), only when a vision model will look at
them. A damaged PDF, an encrypted one, or one over the page limit is refused before any
page is read, with a message that says what to do.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel

from foreman.errors import MediaSetupError
from foreman.tools.media.limits import MediaLimits, refuse_if

PDFTOPPM_TIMEOUT_S = 60.0


class PdfPage(BaseModel):
    number: int  # 1-based, as a person reading the PDF counts
    text: str


def _reader(path: Path, tool: str):  # type: ignore[no-untyped-def]
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        encrypted = reader.is_encrypted
        count = len(reader.pages)
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        refuse_if(True, tool, f"{path.name} is not a readable PDF ({type(exc).__name__}: {exc}); "
                              "open it in a PDF viewer and save or export it again, then attach the copy")
    refuse_if(encrypted, tool, f"{path.name} is encrypted; attach a copy saved without a password")
    return reader, count


def pdf_pages(path: Path, limits: MediaLimits, tool: str = "attach") -> list[PdfPage]:
    """Every page's text, numbered from 1; MediaRefused for a damaged or too long PDF."""
    reader, count = _reader(path, tool)
    refuse_if(count == 0, tool, f"{path.name} has no pages; attach the PDF it was meant to be")
    refuse_if(
        count > limits.max_pdf_pages, tool,
        f"{path.name} has {count} pages, over the limit of {limits.max_pdf_pages}; attach the "
        "pages that matter (e.g. `pdfseparate`/`qpdf --pages`) or raise FOREMAN_MEDIA_MAX_PDF_PAGES",
    )
    pages = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on broken streams
            refuse_if(True, tool, f"page {number} of {path.name} cannot be read ({type(exc).__name__}); "
                                  "save or export the PDF again and attach the copy")
        pages.append(PdfPage(number=number, text=text.strip()))
    return pages


def pages_text(name: str, pages: list[PdfPage]) -> str:
    """The pages as one text, each headed by its number, so answers can cite `file p. N`."""
    blocks = [f"[{name}, page {p.number}]\n{p.text or '(no text on this page)'}" for p in pages]
    return "\n\n".join(blocks)


def page_images(path: Path, pages: list[int], *, dpi: int = 100, tool: str = "attach") -> list[bytes]:
    """PNG bytes of the given 1-based pages, rendered by pdftoppm (for vision models)."""
    exe = shutil.which("pdftoppm")
    if exe is None:
        raise MediaSetupError(
            "pdftoppm (Debian package poppler-utils) is not installed, so PDF pages cannot be shown "
            "to a vision model; run ./install.sh as root, or `apt-get install poppler-utils`"
        )
    images = []
    with tempfile.TemporaryDirectory(prefix="foreman-pdf-") as tmp:
        for number in pages:
            out = Path(tmp) / f"p{number}"
            done = subprocess.run(
                [exe, "-png", "-r", str(dpi), "-f", str(number), "-l", str(number), "-singlefile",
                 str(path), str(out)],
                capture_output=True, timeout=PDFTOPPM_TIMEOUT_S, check=False,
            )
            png = out.with_suffix(".png")
            refuse_if(done.returncode != 0 or not png.is_file(), tool,
                      f"page {number} of {path.name} could not be drawn "
                      f"({done.stderr.decode(errors='replace').strip()[:200]}); save the PDF again")
            images.append(png.read_bytes())
    return images
