"""Overlapping passages cut from a file's lines, each keeping its heading and line numbers.

Why these rules: a passage is what a small model reads, so it must be short (about a
dozen lines, under `max_chars`), self-describing (its heading path travels with it, and
a passage never spans two sections or two PDF pages, whose headings differ), and citable
(`line_start`-`line_end` are the file's own lines). Windows overlap by a few lines so a
fact split across a cut is whole in one of them; a cut prefers a blank line or a heading
once the window is reasonably full. A single line longer than `max_chars` (minified JSON,
a huge log line) is split into pieces that keep its line number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from foreman.tools.knowledge.readers import TextLine

MAX_CHARS = 900
MAX_LINES = 16
OVERLAP_LINES = 2
PREFER_CUT_AT = 0.6  # a boundary this far into a full window starts the next chunk
MERGE_BELOW = 0.35  # a section this small runs on into the next one (YAML keys, short Markdown sections)
CHUNKER_VERSION = "2"  # bump when the rules change: every file is then re-chunked and re-embedded


class Chunk(BaseModel):
    """One passage of one file."""

    path: str
    ordinal: int
    line_start: int
    line_end: int
    page: int | None = None
    heading: str = ""
    text: str

    @property
    def search_text(self) -> str:
        """What is embedded: the file's name and heading give the passage its context."""
        return f"{self.path}" + (f" | {self.heading}" if self.heading else "") + f"\n{self.text}"


@dataclass
class _Window:
    lines: list[TextLine]
    chars: int = 0

    def add(self, line: TextLine) -> None:
        self.lines.append(line)
        self.chars += len(line.text) + 1


def _pieces(line: TextLine, max_chars: int) -> Iterable[TextLine]:
    """A line no longer than `max_chars`, or its pieces (same number)."""
    if len(line.text) <= max_chars:
        yield line
        return
    for start in range(0, len(line.text), max_chars):
        yield line._replace(text=line.text[start:start + max_chars], boundary=start == 0 and line.boundary)


def chunk_lines(path: str, lines: Iterable[TextLine], *, max_chars: int = MAX_CHARS, max_lines: int = MAX_LINES,
                overlap_lines: int = OVERLAP_LINES) -> list[Chunk]:
    """The passages of one file's lines, in order."""
    chunks: list[Chunk] = []
    window = _Window([])

    def emit(keep: int) -> None:
        nonlocal window
        body = window.lines
        text = "\n".join(ln.text.rstrip() for ln in body).strip("\n")
        if text.strip():
            first, last = body[0], body[-1]
            chunks.append(Chunk(path=path, ordinal=len(chunks), line_start=first.number, line_end=last.number,
                                page=first.page, heading=_common_heading([ln.heading for ln in body]), text=text))
        carried = body[-keep:] if keep else []
        window = _Window([])
        for ln in carried:
            window.add(ln)

    for raw in lines:
        for line in _pieces(raw, max_chars):
            if window.lines:
                current = window.lines[-1]
                new_section = line.heading != current.heading or line.page != current.page
                full = len(window.lines) >= max_lines or window.chars + len(line.text) + 1 > max_chars
                nicely = line.boundary and (len(window.lines) >= max_lines * PREFER_CUT_AT
                                            or window.chars >= max_chars * PREFER_CUT_AT)
                small = window.chars < max_chars * MERGE_BELOW
                if new_section and (line.page != current.page or not small):
                    emit(0)
                elif full or (nicely and not new_section):
                    emit(0 if nicely and not full else min(overlap_lines, len(window.lines) - 1))
            if not window.lines and not line.text.strip():
                continue  # a passage never starts with blank lines
            window.add(line)
    if window.lines:
        emit(0)
    return _drop_overlap_only(chunks)


def _common_heading(headings: list[str]) -> str:
    """The heading path every line of a passage shares ("A > B" and "A > C" share "A")."""
    paths = [h.split(" > ") if h else [] for h in dict.fromkeys(headings)]
    shared: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        shared.append(parts[0])
    return " > ".join(shared)


def _drop_overlap_only(chunks: list[Chunk]) -> list[Chunk]:
    """A last window holding only carried-over lines repeats its predecessor: drop it."""
    out: list[Chunk] = []
    for chunk in chunks:
        prev = out[-1] if out else None
        if prev and prev.page == chunk.page and prev.line_start <= chunk.line_start and chunk.line_end <= prev.line_end:
            continue
        out.append(chunk.model_copy(update={"ordinal": len(out)}))
    return out
