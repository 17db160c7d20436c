"""A text-only model gets an image's text through offline OCR, and is told it was OCR;
images too large or damaged are refused before they are decoded."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from foreman.errors import MediaRefused

LINES = ["Backup window starts at 02:30", "Router firmware 7.14 is due"]


def _text_image(path: Path, lines: list[str]) -> None:
    img = Image.new("RGB", (900, 90 * len(lines) + 40), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 90 * i), line, fill="black", font_size=44)  # Pillow's own font
    img.save(path)


def test_ocr_reads_the_known_text_of_a_generated_image(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    _text_image(workspace / "notice.png", LINES)
    attached = prepare_attachments(["notice.png"], workspace=workspace)  # the local model is text-only
    found = attached.files[0]
    assert found.methods == ["ocr"] and found.images == []
    assert "read from the image by OCR" in found.text  # the task is told where the text came from
    body = found.text.split("\n", 1)[1].lower()
    for line in LINES:
        assert line.lower() in body
    assert body.index("backup") < body.index("router")  # reading order: top line first
    assert any("read by OCR" in note for note in attached.notes)  # and the answer can say so


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(workspace: Path, foreman_home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from foreman.engine.attachments import prepare_attachments
    from foreman.settings import reset_settings

    Image.new("1", (8000, 8000)).save(workspace / "huge.png")  # 64 megapixels, a few kB on disk
    with pytest.raises(MediaRefused, match=r"huge.png is 8000x8000 \(64 megapixels\), over the limit of 40; scale it"):
        prepare_attachments(["huge.png"], workspace=workspace)
    monkeypatch.setenv("FOREMAN_MEDIA_MAX_FILE_MB", "1")
    reset_settings()
    (workspace / "big.png").write_bytes(b"\x89PNG" + bytes(2 * 1024 * 1024))
    with pytest.raises(MediaRefused, match=r"big.png is 2.1 MB, over the 1 MB limit.*FOREMAN_MEDIA_MAX_FILE_MB"):
        prepare_attachments(["big.png"], workspace=workspace)


def test_a_damaged_image_is_refused(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    (workspace / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(MediaRefused, match="photo.jpg is not a readable image.*attach a PNG or JPEG"):
        prepare_attachments(["photo.jpg"], workspace=workspace)


def test_a_scanned_pdf_page_without_a_text_layer_is_read_by_ocr(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    _text_image(workspace / "scan.png", LINES[:1])
    with Image.open(workspace / "scan.png") as img:
        img.save(workspace / "scan.pdf")  # an image-only page, as a scanner writes it
    attached = prepare_attachments(["scan.pdf"], workspace=workspace)
    assert attached.files[0].methods == ["pdf-text", "ocr"]
    assert attached.text().startswith("[scan.pdf, page 1]\n(read by OCR)\n")
    squeezed = "".join(attached.text().lower().split())  # OCR may drop a space between words
    assert "".join(LINES[0].lower().split()) in squeezed
