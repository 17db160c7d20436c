"""Write demo/workspace/docs/warranty-summary.pdf: a small real PDF for the knowledge demo and tests.

Written by hand (PDF 1.4, Helvetica, one text object per page) so that making it needs no
PDF library; pypdf, which the ingest uses, reads its text back. Run it again after editing
PAGES:  .venv/bin/python bench/make_demo_pdf.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "demo" / "workspace" / "docs" / "warranty-summary.pdf"

PAGES: list[list[str]] = [
    [
        "Homelab hardware: warranty and support summary",
        "Kept by Priya. Updated 2026-11-10.",
        "",
        "nas01 drives: 4 x WD Red Plus 8 TB (WD80EFPX), bought 2022-05-02.",
        "Drive warranty: 3 years, until 2025-05-02 (expired). The spare bought in",
        "October 2026 is under warranty until 2029-10-08.",
        "",
        "pve1: AMD Ryzen 7 5700G system, bought 2023-05-19.",
        "Warranty: 3 years from the shop (ComputerHaus), until 2026-05-19 (expired).",
        "",
        "fw01: Intel N100 mini PC, bought 2024-02-10, warranty until 2026-02-10.",
    ],
    [
        "UPS: APC Back-UPS Pro 1500 (BR1500GI), serial 3B2304X12345.",
        "Bought 2023-04-02; warranty 3 years, until 2026-04-02.",
        "Replacement battery cartridge: APCRBC124 (about 65 EUR).",
        "APC support: 0800 101 0067, or the support portal with the serial number.",
        "",
        "UniFi access points and switch: 1 year warranty (expired), no support plan.",
        "",
        "Claims: keep the invoice PDFs in Paperless (tag: warranty).",
    ],
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content(lines: list[str]) -> bytes:
    ops = ["BT", "/F1 11 Tf", "14 TL", "56 780 Td"]
    for line in lines:
        ops.append(f"({_escape(line)}) Tj T*")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def build(pages: list[list[str]]) -> bytes:
    """A complete PDF file with one page per entry of `pages`."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, lines in enumerate(pages):
        stream = _content(lines)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >>"
                       f" /Contents {page_ids[i] + 1} 0 R >>".encode())
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(build(PAGES))
    print(f"wrote {target} ({target.stat().st_size} bytes, {len(PAGES)} pages)")


if __name__ == "__main__":
    main()
