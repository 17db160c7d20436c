"""Multi-modal figures: speech round trip, OCR accuracy, seconds per PDF page and audio minute.

    .venv/bin/python bench/multimodal.py [--sentences N] [--images N]

- WER: espeak-ng speaks known sentences (tools/media/speech.py), Whisper base hears them
  back (tools/media/transcribe.py); word error rate over all words (lowercase, no
  punctuation). Target <= 0.2. Also seconds per audio minute (the real-time factor x 60).
- OCR: Pillow draws known lines (its own font, several sizes) into PNGs; RapidOCR reads
  them (tools/media/ocr.py); character accuracy = 1 - edit distance / reference length.
  Target >= 0.9. Baseline in the same run: RapidOCR's default detector settings on the
  same first image, as a speed ratio.
- PDF: pypdf text and pdftoppm PNG, seconds per page, on the demo PDF.

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "Please restart the web server before noon.",
    "The disk on the storage box is almost full.",
    "Send the weekly report to the whole team.",
    "Check the certificate on the router today.",
    "The backup finished without any errors last night.",
    "Move the old photos to the archive folder.",
]
OCR_LINES = [
    ["Backup window starts at 02:30", "Router firmware 7.14 is due"],
    ["Invoice 2026-118: 4 x WD Red Plus 8 TB", "Total 812.40 EUR"],
    ["UPS battery APCRBC124", "replace before 2026-04-02"],
    ["Kitchen switch port 7 is flapping", "check the cable first"],
    ["Wi-Fi guest password rotates monthly", "ask Priya for the new one"],
    ["nas01 SMART: reallocated sectors 12", "order a spare drive"],
]


def edit_distance(a: list[str] | str, b: list[str] | str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def speech_round_trip(count: int, tmp: Path) -> dict:
    from foreman.settings import get_settings
    from foreman.tools.media.limits import MediaLimits
    from foreman.tools.media.speech import speak
    from foreman.tools.media.transcribe import _model, transcribe
    from foreman.tools.media.whisper_model import ensure_model

    started = time.perf_counter()
    _model(str(ensure_model(get_settings())))
    load_s = time.perf_counter() - started
    errors = total = 0
    audio_s = speak_s = hear_s = 0.0
    for i, sentence in enumerate(SENTENCES[:count]):
        wav = tmp / f"s{i}.wav"
        t = time.perf_counter()
        spoken = speak(sentence, wav)
        speak_s += time.perf_counter() - t
        t = time.perf_counter()
        heard = transcribe(wav, MediaLimits(), language="en")
        hear_s += time.perf_counter() - t
        audio_s += spoken.seconds
        ref, hyp = words(sentence), words(heard.text)
        errors += edit_distance(ref, hyp)
        total += len(ref)
        print(f"  speech {i}: {sentence!r} -> {heard.text!r}")
    return {"wer": round(errors / total, 3), "audio_s": round(audio_s, 1),
            "s_per_audio_minute": round(hear_s / audio_s * 60, 1), "real_time_factor": round(hear_s / audio_s, 2),
            "whisper_load_s": round(load_s, 2), "espeak_s_per_audio_s": round(speak_s / audio_s, 3)}


def draw(lines: list[str], size: int, path: Path) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (40 + size * 20, 40 + int(size * 1.8) * len(lines)), "white")
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((20, 20 + int(size * 1.8) * i), line, fill="black", font_size=size)
    img.save(path)
    return "\n".join(lines)


def ocr_accuracy(count: int, tmp: Path) -> dict:
    from rapidocr_onnxruntime import RapidOCR

    from foreman.tools.media.limits import MediaLimits
    from foreman.tools.media.ocr import _engine, ocr_image

    _engine()
    errors = chars = 0
    seconds = 0.0
    first = None
    for i, lines in enumerate(OCR_LINES[:count]):
        path = tmp / f"o{i}.png"
        ref = draw(lines, (28, 36, 44)[i % 3], path)
        first = first or path
        t = time.perf_counter()
        hyp = ocr_image(path, MediaLimits()).text
        seconds += time.perf_counter() - t
        ref_n, hyp_n = " ".join(ref.split()), " ".join(hyp.split())
        errors += edit_distance(ref_n, hyp_n)
        chars += len(ref_n)
        print(f"  ocr {i}: {ref_n!r} -> {hyp_n!r}")
    default = RapidOCR(intra_op_num_threads=2, inter_op_num_threads=1)
    default(str(first))
    t = time.perf_counter()
    default(str(first))
    default_s = time.perf_counter() - t
    t = time.perf_counter()
    ocr_image(first, MediaLimits())
    ours_s = time.perf_counter() - t
    return {"ocr_char_accuracy": round(1 - errors / chars, 3), "ocr_s_per_image": round(seconds / count, 2),
            "ocr_speedup_vs_default_detector": round(default_s / ours_s, 2)}


def pdf_speed() -> dict:
    from foreman.tools.media.limits import MediaLimits
    from foreman.tools.media.pdf import page_images, pdf_pages

    path = ROOT / "demo" / "workspace" / "docs" / "warranty-summary.pdf"
    pdf_pages(path, MediaLimits())  # warm: imports and caches out of the timing
    t = time.perf_counter()
    for _ in range(5):
        pages = pdf_pages(path, MediaLimits())
    text_s = (time.perf_counter() - t) / 5 / len(pages)
    t = time.perf_counter()
    page_images(path, [p.number for p in pages])
    image_s = (time.perf_counter() - t) / len(pages)
    return {"pdf_text_s_per_page": round(text_s, 4), "pdf_png_s_per_page": round(image_s, 3),
            "pdf_png_vs_text": round(image_s / text_s, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="foreman-bench-mm-") as tmp:
        figures = {**speech_round_trip(args.sentences, Path(tmp)), **ocr_accuracy(args.images, Path(tmp)),
                   **pdf_speed(), "sentences": args.sentences, "images": args.images}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
