"""Files attached to a run, a chat turn or a workflow step, turned into what a task gets.

One call, `prepare_attachments`, made before planning: each file (a workspace path, or a
URL on the allowed hosts) is checked (kind, size, pages, image size, audio length) and
read: a PDF becomes text headed by page numbers (plus page images for a vision model,
and OCR for pages with no text layer when the model cannot see), an image goes to a
vision model as image content or, for a text-only model, through OCR (the text says it
came from OCR), audio becomes a Whisper transcript, a text file its text. So a bad file
or an image that needs eyes the model lacks fails here, with one error that says what to
do, before any task runs; afterwards nothing about the files can fail.

The result is data: `text()` for a task's context, `content_parts()` / `user_message()`
for a model that takes images (OpenAI-style parts; langchain converts them per provider),
`notes` for the answer (e.g. that OCR was used), `describe()` for the planner, `passages()`
for the grounded fast path (each file cited by its name), `markdown()` for the run's
artifact.

A file's reading (OCR, a transcript) is kept for a while by its bytes' digest, so the
check made before a run and the step that then gets the file read it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from foreman.agents.vision import HOW_TO_GET_VISION, VisionSupport, vision_support
from foreman.errors import MediaRefused, VisionRequired
from foreman.settings import Settings, get_settings
from foreman.tools.fd_walk import _open_file, _root_fd
from foreman.tools.http import HttpPolicy
from foreman.tools.knowledge.search import Passage
from foreman.tools.media import images, ocr, pdf, transcribe
from foreman.tools.media.limits import MediaLimits, check_size, kind_of, refuse_if
from foreman.tools.media.remote import fetch_bytes, url_name
from foreman.tools.text import words
from foreman.tools.workspace import Workspace, _parts

TOOL = "attach"
VISION_PDF_PAGES = 4  # page images sent to a vision model, from the first page on
OCR_PDF_PAGES = 20  # pages without a text layer read by OCR for a text-only model
MIN_OCR_CHARS = 3  # less than this and OCR found nothing to stand in for vision
CACHE_FILES = 32  # readings kept (images as data URLs: up to about 1 MB each)
CACHE_TTL_S = 900.0
PASSAGE_LINES = 12  # an attached file's text is cut into passages of this many lines for the fast path
PASSAGES_PER_FILE = 2
PLANNER_CHARS = 3_000  # of the files' text shown to the planner (a small model's context is small)
ATTACHED_BASE = "attached"  # the `base` of a passage that comes from an attached file
HOW_READ: dict[str, str] = {"pdf-text": "PDF text with page numbers", "ocr": "OCR text",
                            "transcript": "a Whisper transcript", "text": "plain text",
                            "vision": "an image for the model to look at"}

Method = Literal["pdf-text", "ocr", "transcript", "text", "vision"]


class AttachedFile(BaseModel):
    source: str  # as given: a workspace path or a URL
    name: str
    kind: str
    methods: list[Method]
    text: str  # what a text-only model reads, headed by the file name
    images: list[str] = Field(default_factory=list)  # data URLs for a vision model


class Attachments(BaseModel):
    files: list[AttachedFile]
    vision: VisionSupport

    @property
    def used_ocr(self) -> list[str]:
        return [f.name for f in self.files if "ocr" in f.methods]

    @property
    def notes(self) -> list[str]:
        """Sentences for the answer: what was read how, when it matters to the reader."""
        out = []
        if self.used_ocr:
            out.append(f"Text of {', '.join(self.used_ocr)} was read by OCR (the model cannot see images); "
                       "check names and numbers against the original.")
        heard = [f.name for f in self.files if "transcript" in f.methods]
        if heard:
            out.append(f"{', '.join(heard)} transcribed offline by Whisper base; it may mishear names.")
        return out

    def text(self) -> str:
        """Every file's text, one block each, for a task's context or instructions."""
        return "\n\n".join(f.text for f in self.files)

    def content_parts(self) -> list[dict[str, Any]]:
        """OpenAI-style content: the text, then each image as a data URL."""
        parts: list[dict[str, Any]] = [{"type": "text", "text": "Attached files:\n\n" + self.text()}]
        parts += [{"type": "image_url", "image_url": {"url": url}} for f in self.files for url in f.images]
        return parts

    def user_message(self) -> Any:
        """A ControlFlow user message carrying the files, to add to a flow's history
        (`flow.add_events([attachments.user_message()])`) so every task of it sees them.
        Without images it is plain text: text-only servers need not parse content parts."""
        from controlflow.events.events import UserMessage

        if not any(f.images for f in self.files):
            return UserMessage(content="Attached files:\n\n" + self.text())
        return UserMessage(content=self.content_parts())

    def describe(self) -> str:
        """One line per file for the planner: its name, kind and how it was read."""
        lines = [f"- {f.name} ({f.kind}; read as {', '.join(HOW_READ[m] for m in f.methods)})" for f in self.files]
        return ("Files attached to this run; every step is given them (their text, and images to a model "
                "that sees), so plan no step to find or read them:\n" + "\n".join(lines))

    def planner_context(self, max_chars: int = PLANNER_CHARS) -> str:
        """What the planner is told: the files, then their text cut to `max_chars`."""
        text = self.text()
        cut = text[:max_chars] + ("\n[... the steps get the whole text ...]" if len(text) > max_chars else "")
        return f"{self.describe()}\n\n{cut}"

    def passages(self, question: str, per_file: int = PASSAGES_PER_FILE) -> list[Passage]:
        """The files' text as knowledge-base passages for `question`: each file cut into blocks
        (a PDF by page), the `per_file` blocks sharing most words with the question kept in
        document order. Their `path` is the file's name, so an answer cites the file."""
        wanted = _words(question)
        out: list[Passage] = []
        for f in self.files:
            blocks = _blocks(f)
            ranked = sorted(range(len(blocks)), key=lambda i: (-len(_words(blocks[i].text) & wanted), i))
            out += [blocks[i] for i in sorted(ranked[:per_file])]
        return out

    def markdown(self) -> str:
        """The run's "attachments" artifact: each file, its kind, how it was read."""
        rows = [f"| {f.name} | {f.kind} | {', '.join(HOW_READ[m] for m in f.methods)} | {len(f.text)} | "
                f"{len(f.images)} | {f.source} |" for f in self.files]
        notes = "".join(f"\n\n{note}" for note in self.notes)
        return ("# Attached files\n\n| file | kind | read as | characters | images | from |\n"
                "|---|---|---|---|---|---|\n" + "\n".join(rows) + notes)

    def with_notes(self, answer: str) -> str:
        """`answer` followed by the notes a reader needs (OCR used, a transcript may mishear)."""
        if not self.notes:
            return answer
        return answer + "\n\n" + "\n".join(f"Note: {note}" for note in self.notes)


_words = words


_PAGE_HEAD = re.compile(r"^\[(?P<name>.+), page (?P<page>\d+)\]$")


def _blocks(f: AttachedFile) -> list[Passage]:
    """`f`'s text as passages of at most PASSAGE_LINES lines, PDF pages apart; the header line a
    reading puts first (OCR, transcript) becomes each passage's heading."""
    lines = f.text.splitlines()
    heading = ""
    if lines and lines[0].startswith(f"[{f.name}") and not _PAGE_HEAD.match(lines[0]):
        heading, lines = lines[0].strip("[]"), lines[1:]
    pages: list[tuple[int | None, list[str]]] = [(None, [])]
    for line in lines:
        head = _PAGE_HEAD.match(line) if f.kind == "pdf" else None
        if head:
            pages.append((int(head["page"]), []))
        else:
            pages[-1][1].append(line)
    out = []
    for page, body in pages:
        for start in range(0, len(body), PASSAGE_LINES):
            chunk = body[start:start + PASSAGE_LINES]
            if not "".join(chunk).strip():
                continue
            out.append(Passage(base=ATTACHED_BASE, path=f.name, line_start=start + 1, line_end=start + len(chunk),
                               page=page, heading=heading or "attached file", text="\n".join(chunk), score=1.0,
                               keyword_rank=1))
    return out


def _read_workspace(ws: Workspace, path: str, limits: MediaLimits) -> bytes:
    """The bytes of a workspace file, opened by the file tools' walk (no link out, no
    hardlink, no special file); the size is checked on the open descriptor first."""
    parts = _parts(ws, path, TOOL)
    with _root_fd(ws) as root_fd:
        try:
            fd, st, _ = _open_file(ws, root_fd, parts, path, TOOL)
        except FileNotFoundError:
            raise MediaRefused(TOOL, f"there is no file {path!r} in the workspace {ws.root}; give a path "
                                     "relative to that folder, or run in the folder the file is in") from None
        except IsADirectoryError:
            raise MediaRefused(TOOL, f"{path!r} is a folder; attach the files in it one by one") from None
        with os.fdopen(fd, "rb") as handle:
            refuse_if(st.st_size > limits.max_file_bytes, TOOL,
                      f"{path} is {st.st_size / 1e6:.1f} MB, over the {limits.max_file_bytes / 1e6:.0f} MB limit "
                      "for one attached file; split or shrink it, or raise FOREMAN_MEDIA_MAX_FILE_MB")
            return handle.read(limits.max_file_bytes + 1)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _need_vision(name: str, support: VisionSupport, detail: str) -> VisionRequired:
    return VisionRequired(f"this objective needs a vision model: {name} {detail}, and {support.why}; "
                          f"{HOW_TO_GET_VISION}")


def _read_pdf(path: Path, name: str, limits: MediaLimits, support: VisionSupport) -> tuple[list[Method], str, list[str]]:
    pages = pdf.pdf_pages(path, limits)
    methods: list[Method] = ["pdf-text"]
    blank = [p.number for p in pages if not p.text][:OCR_PDF_PAGES]
    shots: list[str] = []
    if support.vision:
        numbers = [p.number for p in pages][:VISION_PDF_PAGES]
        shots = [images.vision_data_url(png) for png in pdf.page_images(path, numbers)]
        methods.append("vision")
    elif blank:  # a scanned page: OCR stands in for the eyes the model lacks
        for number, png in zip(blank, pdf.page_images(path, blank, dpi=150), strict=True):
            with tempfile.NamedTemporaryFile(suffix=".png") as tmp:
                Path(tmp.name).write_bytes(png)
                found = ocr.ocr_image(Path(tmp.name), limits).text
            pages[number - 1].text = f"(read by OCR)\n{found}" if found else ""
        methods.append("ocr")
    return methods, pdf.pages_text(name, pages), shots


def _read_image(path: Path, name: str, limits: MediaLimits, support: VisionSupport,
                needs_vision: bool) -> tuple[list[Method], str, list[str]]:
    info = images.image_info(path, limits)
    if support.vision:
        return ["vision"], f"[{name}: a {info.width}x{info.height} image, attached for you to look at]", [
            images.vision_data_url(path.read_bytes())]
    if needs_vision:
        raise _need_vision(name, support, "is an image the task asks to look at")
    found = ocr.ocr_image(path, limits)
    if len(found.text.strip()) < MIN_OCR_CHARS:
        raise _need_vision(name, support, "is an image with no text that OCR can read")
    header = (f"[{name}: text read from the image by OCR, because the model cannot see images; "
              f"mean confidence {found.mean_confidence:.2f}]")
    return ["ocr"], f"{header}\n{found.text}", []


def _read_one(path: Path, name: str, kind: str, limits: MediaLimits, settings: Settings,
              support: VisionSupport, needs_vision: bool, text_limit: int) -> tuple[list[Method], str, list[str]]:
    if kind == "pdf":
        return _read_pdf(path, name, limits, support)
    if kind == "image":
        return _read_image(path, name, limits, support, needs_vision)
    if kind == "audio":
        heard = transcribe.transcribe(path, limits, settings=settings)
        header = f"[{name}: transcript of {heard.duration_s:.0f} s of audio ({heard.language}), by Whisper offline]"
        return ["transcript"], f"{header}\n{heard.text or '(no speech found)'}", []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MediaRefused(TOOL, f"{name} is not UTF-8 text; save it as UTF-8 and attach it again") from None
    cut = len(text) > text_limit
    return ["text"], f"[{name}]\n{text[:text_limit]}" + ("\n[... cut at the read limit ...]" if cut else ""), []


_cache: OrderedDict[tuple[Any, ...], tuple[float, list[Method], str, list[str]]] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple[Any, ...]) -> tuple[list[Method], str, list[str]] | None:
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None or time.monotonic() - hit[0] > CACHE_TTL_S:
            _cache.pop(key, None)
            return None
        _cache.move_to_end(key)
        return hit[1], hit[2], hit[3]


def _keep(key: tuple[Any, ...], reading: tuple[list[Method], str, list[str]]) -> None:
    with _cache_lock:
        _cache[key] = (time.monotonic(), *reading)
        while len(_cache) > CACHE_FILES:
            _cache.popitem(last=False)


def prepare_attachments(sources: list[str], *, settings: Settings | None = None, workspace: Path | str | None = None,
                        vision: bool | None = None, needs_vision: bool = False) -> Attachments:
    """Check and read every attached file; raises before any task runs if one cannot be used.

    `sources`: workspace paths (relative to the run's workspace) or http(s) URLs on the
    allowed hosts. `vision` overrides what the model is taken to support (default: from
    FOREMAN_MODEL, see `agents.vision`); `needs_vision` says the objective is about what an
    image looks like, so OCR cannot stand in. Raises MediaRefused (bad file), ToolRefused
    (outside the workspace, host not allowed), VisionRequired, MediaSetupError.
    """
    settings = settings or get_settings()
    if workspace is not None:
        settings = settings.model_copy(update={"workspace": Path(workspace)})
    ws = Workspace.from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    support = vision_support(settings) if vision is None else VisionSupport(
        vision=vision, why="the caller says the model " + ("reads" if vision else "does not read") + " images")
    files: list[AttachedFile] = []
    with tempfile.TemporaryDirectory(prefix="foreman-attach-") as tmp:
        for index, source in enumerate(dict.fromkeys(sources)):
            if not _is_url(source):
                _parts(ws, source, TOOL)  # outside the workspace is refused first, whatever its kind
            name = url_name(source) if _is_url(source) else Path(source).name
            kind = kind_of(name, TOOL)  # an unsupported kind is refused before it is read
            data = (fetch_bytes(source, HttpPolicy.from_settings(settings), limits.max_file_bytes)
                    if _is_url(source) else _read_workspace(ws, source, limits))
            key = (hashlib.sha256(data).hexdigest(), name, support.vision, needs_vision,
                   limits.model_dump_json(), ws.max_read_bytes)
            reading = _cached(key)
            if reading is None:
                local = Path(tmp) / f"{index}-{name}"
                local.write_bytes(data)
                check_size(local, limits, TOOL)
                reading = _read_one(local, name, kind, limits, settings, support, needs_vision, ws.max_read_bytes)
                _keep(key, reading)
            methods, text, shots = reading
            files.append(AttachedFile(source=source, name=name, kind=kind, methods=methods, text=text, images=shots))
    return Attachments(files=files, vision=support)

