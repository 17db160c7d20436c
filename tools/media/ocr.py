"""Text in an image, read offline by RapidOCR (PP-OCRv4 models ship in its wheel).

The fallback when the model cannot see: the text of a screenshot, a scanned page or a
photographed label reaches a text-only model, and the result says it came from OCR so
the answer can say so too. The engine loads once per process (about 2 s); boxes are put
back into reading order (lines top to bottom, words left to right).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from foreman.tools.media.images import image_info
from foreman.tools.media.limits import MediaLimits, refuse_if


class OcrResult(BaseModel):
    text: str
    lines: list[str]
    mean_confidence: float  # 0..1 over the boxes read; 0 when nothing was found


@cache
def _engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    # Two threads: the machine is small and shared; the models are the wheel's own. The
    # detector's default scales the *shorter* side up to 736 px (a 900x200 line becomes
    # 3300x736: 4 s, and split words); bounding the longer side is 5x faster and reads better.
    return RapidOCR(intra_op_num_threads=2, inter_op_num_threads=1,
                    det_limit_type="max", det_limit_side_len=1280)


def _reading_order(boxes: list[tuple[list[list[float]], str, float]]) -> list[str]:
    """Group boxes whose vertical centres are within half a line of each other."""
    items = []
    for box, text, _ in boxes:
        ys = [pt[1] for pt in box]
        xs = [pt[0] for pt in box]
        items.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text))
    items.sort()
    lines: list[list[tuple[float, str]]] = []
    last_centre, last_height = None, 0.0
    for centre, height, x, text in items:
        if last_centre is not None and abs(centre - last_centre) <= max(height, last_height) / 2:
            lines[-1].append((x, text))
        else:
            lines.append([(x, text)])
            last_centre, last_height = centre, height
    return [" ".join(t for _, t in sorted(line)) for line in lines]


def ocr_image(path: Path, limits: MediaLimits, tool: str = "attach") -> OcrResult:
    """The text found in the image at `path` (checked against the limits first)."""
    image_info(path, limits, tool)
    try:
        found, _ = _engine()(str(path))
    except Exception as exc:  # noqa: BLE001 - opencv/onnx errors on odd encodings
        refuse_if(True, tool, f"{path.name} could not be read for OCR ({type(exc).__name__}: {exc}); "
                              "re-save it as PNG and attach it again")
    boxes = found or []
    lines = _reading_order(boxes)
    confidence = sum(float(b[2]) for b in boxes) / len(boxes) if boxes else 0.0
    return OcrResult(text="\n".join(lines), lines=lines, mean_confidence=round(confidence, 3))
