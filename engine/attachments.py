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
`notes` for the answer (e.g. that OCR was used).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from foreman.agents.vision import HOW_TO_GET_VISION, VisionSupport, vision_support
from foreman.errors import MediaRefused, VisionRequired
from foreman.settings import Settings, get_settings
from foreman.tools.fd_walk import _open_file, _root_fd
from foreman.tools.http import HttpPolicy
from foreman.tools.media import images, ocr, pdf, transcribe
from foreman.tools.media.limits import MediaLimits, check_size, kind_of, refuse_if
from foreman.tools.media.remote import fetch_bytes, url_name
from foreman.tools.workspace import Workspace, _parts

TOOL = "attach"
VISION_PDF_PAGES = 4  # page images sent to a vision model, from the first page on
OCR_PDF_PAGES = 20  # pages without a text layer read by OCR for a text-only model
MIN_OCR_CHARS = 3  # less than this and OCR found nothing to stand in for vision

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
        (`flow.add_events([attachments.user_message()])`) so every task of it sees them."""
        from controlflow.events.events import UserMessage

        return UserMessage(content=self.content_parts())


def _read_workspace(ws: Workspace, path: str, limits: MediaLimits) -> bytes:
    """The bytes of a workspace file, opened by the file tools' walk (no link out, no
    hardlink, no special file); the size is checked on the open descriptor first."""
    parts = _parts(ws, path, TOOL)
    with _root_fd(ws) as root_fd:
        try:
            fd, st, _ = _open_file(ws, root_fd, parts, path, TOOL)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise MediaRefused(TOOL, f"{exc}") from None
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
            local = Path(tmp) / f"{index}-{name}"
            local.write_bytes(data)
            check_size(local, limits, TOOL)
            methods, text, shots = _read_one(local, name, kind, limits, settings, support, needs_vision,
                                             ws.max_read_bytes)
            files.append(AttachedFile(source=source, name=name, kind=kind, methods=methods, text=text, images=shots))
    return Attachments(files=files, vision=support)


def objective_with_attachments(objective: str, attachments: Attachments) -> str:
    """The files' text (images only as their OCR text), then the objective, for callers that
    pass text alone, like `foreman run --file` until the planner takes attachments itself.
    The objective comes last so that a question still ends the text (the router reads that)."""
    if not attachments.files:
        return objective
    notes = "".join(f"\n(Note for the answer: {note})" for note in attachments.notes)
    return f"Attached files:\n\n{attachments.text()}{notes}\n\n{objective}"
