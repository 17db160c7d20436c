"""PDFs become text with page numbers; bad files and paths are refused with what to do."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from foreman.errors import MediaRefused, ToolRefused
from foreman.tools.media.limits import MediaLimits
from foreman.tools.media.pdf import page_images, pdf_pages

DEMO_PDF = Path(__file__).resolve().parent.parent / "demo" / "workspace" / "docs" / "warranty-summary.pdf"


def test_pdf_text_comes_with_its_page_numbers(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    attached = prepare_attachments(["docs/warranty-summary.pdf"], workspace=workspace)
    text = attached.text()
    # The UPS serial is on page 2 of the demo PDF, the drives on page 1.
    page1, page2 = text.split("[warranty-summary.pdf, page 2]")
    assert page1.startswith("[warranty-summary.pdf, page 1]") and "WD Red Plus" in page1
    assert "3B2304X12345" in page2 and "WD Red Plus" not in page2
    assert attached.files[0].methods == ["pdf-text"] and attached.files[0].images == []


def test_pdf_pages_are_drawn_as_png_for_a_vision_model() -> None:
    png = page_images(DEMO_PDF, [2])[0]
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_a_pdf_with_more_pages_than_the_limit_is_refused() -> None:
    count = len(pdf_pages(DEMO_PDF, MediaLimits()))
    with pytest.raises(MediaRefused, match=rf"has {count} pages, over the limit of 1; .*FOREMAN_MEDIA_MAX_PDF_PAGES"):
        pdf_pages(DEMO_PDF, MediaLimits(max_pdf_pages=1))


def test_a_corrupt_pdf_is_refused(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    data = DEMO_PDF.read_bytes()
    (workspace / "broken.pdf").write_bytes(data[: len(data) // 3])  # cut short, as a failed download is
    (workspace / "fake.pdf").write_text("this is not a PDF at all\n")
    for name in ("broken.pdf", "fake.pdf"):
        with pytest.raises(MediaRefused, match="not a readable PDF|cannot be read") as caught:
            prepare_attachments([name], workspace=workspace)
        assert "save or export" in str(caught.value)


def test_an_unsupported_format_is_refused_before_it_is_read(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    (workspace / "report.docx").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(MediaRefused, match=r"'report.docx' is a .docx file, which Foreman cannot read; attach a PDF"):
        prepare_attachments(["report.docx"], workspace=workspace)


def test_files_outside_the_workspace_are_refused(workspace: Path, tmp_path: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    outside = tmp_path / "secret.pdf"
    shutil.copy(DEMO_PDF, outside)
    os.symlink(outside, workspace / "link.pdf")
    for source in (str(outside), "../secret.pdf", "link.pdf"):
        with pytest.raises(ToolRefused, match="outside the workspace|symlink|link") as caught:
            prepare_attachments([source], workspace=workspace)
        assert "relative to the workspace root" in str(caught.value) or "link" in str(caught.value)


def test_a_missing_file_is_refused_naming_it(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    with pytest.raises(MediaRefused, match="no file 'docs/nope.pdf'"):
        prepare_attachments(["docs/nope.pdf"], workspace=workspace)


def test_a_pdf_from_an_allowed_host_is_read_and_other_hosts_are_refused(workspace: Path, foreman_home: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from foreman.engine.attachments import prepare_attachments

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(DEMO_PDF.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/warranty-summary.pdf"
        attached = prepare_attachments([url], workspace=workspace)  # 127.0.0.1 is allowed by default
        assert attached.files[0].source == url and "[warranty-summary.pdf, page 2]" in attached.text()
    finally:
        server.shutdown()
    with pytest.raises(ToolRefused, match="host 'files.example.org' is not allowed.*FOREMAN_ALLOWED_HOSTS"):
        prepare_attachments(["https://files.example.org/report.pdf"], workspace=workspace)
