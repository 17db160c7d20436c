"""A file's text as numbered lines with the heading (and page) each line sits under.

Exists so chunking works the same on every kind of file: whatever the format, a reader
turns its bytes into `TextLine`s whose numbers are the file's own line numbers (a PDF's
are per page), so a passage can always be cited as `path:line`. A file that cannot be
read as what its name says (binary, not UTF-8, malformed JSON/YAML/CSV, a broken or
text-less PDF) comes back as a `Skip` with the reason, never as an exception: one bad
file must not stop an ingest, and the reasons are counted for the person.
"""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Literal, NamedTuple

import yaml

from foreman.safe_yaml import YamlRefused, check_yaml

Kind = Literal["markdown", "text", "html", "pdf", "code", "csv", "json", "yaml", "log"]

SUFFIXES: dict[str, Kind] = {
    **dict.fromkeys((".md", ".markdown", ".mdx"), "markdown"),
    **dict.fromkeys((".txt", ".text", ".rst", ".org", ".adoc"), "text"),
    **dict.fromkeys((".html", ".htm", ".xhtml"), "html"),
    ".pdf": "pdf",
    **dict.fromkeys((".csv", ".tsv"), "csv"),
    ".json": "json",
    **dict.fromkeys((".yaml", ".yml"), "yaml"),
    **dict.fromkeys((".log", ".out", ".err"), "log"),
    **dict.fromkeys((
        ".py", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".js", ".mjs", ".ts", ".go", ".rs", ".c", ".h",
        ".cc", ".cpp", ".hpp", ".java", ".kt", ".rb", ".php", ".lua", ".pl", ".sql", ".toml", ".ini",
        ".cfg", ".conf", ".service", ".timer", ".socket", ".nginx", ".tf", ".hcl", ".nix", ".xml",
        ".properties", ".env.example", ".rules", ".cron",
    ), "code"),
}
NAMES: dict[str, Kind] = {
    **dict.fromkeys(("dockerfile", "makefile", "caddyfile", "vagrantfile", "justfile", "crontab"), "code"),
    **dict.fromkeys(("readme", "license", "changelog", "notes", "todo"), "text"),
}
# Known binary formats: skipped by name, without reading them.
BINARY_SUFFIXES = frozenset((
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".bmp", ".tiff", ".zip", ".gz", ".tgz", ".xz",
    ".bz2", ".7z", ".tar", ".rar", ".zst", ".iso", ".img", ".qcow2", ".vmdk", ".bin", ".exe", ".dll",
    ".so", ".dylib", ".o", ".a", ".pyc", ".class", ".jar", ".whl", ".db", ".sqlite", ".sqlite3",
    ".onnx", ".gguf", ".pt", ".safetensors", ".mp3", ".mp4", ".mkv", ".mov", ".wav", ".flac", ".ogg",
    ".woff", ".woff2", ".ttf", ".otf", ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".key", ".pem", ".der",
))
SNIFF_BYTES = 8_192
ROTATED_LOG = re.compile(r"\.log(\.\d+)?$")


class TextLine(NamedTuple):
    """One line of a file's text, where it came from and what it sits under."""

    number: int  # 1-based line of the file (of the page, for a PDF)
    text: str
    heading: str  # the headings in force here, outermost first ("Runbook > Restore a VM"), or ""
    page: int | None = None
    boundary: bool = False  # a good place to start a new chunk (a heading, a new block, a function)


class Extracted(NamedTuple):
    kind: Kind
    lines: list[TextLine]


class Skip(NamedTuple):
    """Why a file is not indexed; `reason` is short and shared by files skipped for the same cause."""

    reason: str
    detail: str = ""


def kind_of(path: str) -> Kind | None:
    """What a file is by its name; None for an unknown name (indexed as text if it reads as text)."""
    name = PurePosixPath(path).name.lower()
    if ROTATED_LOG.search(name):
        return "log"
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return NAMES.get(name) or NAMES.get(name.split(".")[0])


def is_binary_name(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in BINARY_SUFFIXES


def extract(path: str, data: bytes) -> Extracted | Skip:
    """The lines of `data`, read as the kind its name says (text when unknown), or why not."""
    kind = kind_of(path)
    if kind == "pdf":
        return _pdf(data)
    if b"\x00" in data[:SNIFF_BYTES]:
        return Skip("binary", "contains NUL bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Skip("not UTF-8 text", f"byte {exc.start}")
    if not text.strip():
        return Skip("empty")
    readers = {"markdown": _markdown, "html": _html, "code": _code, "csv": _csv, "json": _json,
               "yaml": _yaml, "log": _plain, "text": _plain}
    return readers[kind or "text"](text, kind or "text")


# --- plain, log, code --------------------------------------------------------------


def _plain(text: str, kind: Kind) -> Extracted:
    """Plain lines; a text file's title line (short, alone, then a blank line) heads all of them,
    so "Q3 homelab report" travels with every passage of report.txt."""
    lines = text.splitlines()
    title = _title(lines) if kind == "text" else ""
    out = []
    for i, line in enumerate(lines):
        blank_before = i > 0 and not lines[i - 1].strip()
        out.append(TextLine(i + 1, line, title, None, kind == "log" or blank_before))
    return Extracted(kind, out)


def _title(lines: list[str]) -> str:
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or first + 1 >= len(lines) or lines[first + 1].strip():
        return ""
    line = lines[first].strip()
    return line if len(line) <= 80 and not line.endswith((".", ":", ";", ",")) else ""


_CODE_HEAD = re.compile(
    r"^(?:(?:async\s+)?def|class|function|func|fn|pub\s+fn|interface|type|struct|impl|module)\s+([A-Za-z_][\w.]*)"
    r"|^([A-Za-z_][\w-]*)\s*\(\)\s*\{"  # a shell function
)
_SECTION = re.compile(r"^\s*\[([^\]\n]{1,80})\]\s*$")  # [section] of ini / toml / systemd units


def _code(text: str, kind: Kind) -> Extracted:
    """Top-level functions, classes and [sections] become headings, so a chunk says what it is in."""
    out: list[TextLine] = []
    heading = ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        head = _CODE_HEAD.match(line) or _SECTION.match(line)
        if head:
            heading = head.group(0).strip() if _SECTION.match(line) else line.strip().rstrip(":{ ")[:80]
        blank_before = i > 0 and not lines[i - 1].strip()
        out.append(TextLine(i + 1, line, heading, None, bool(head) or blank_before))
    return Extracted(kind, out)


# --- markdown ----------------------------------------------------------------------

_MD_HEAD = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown(text: str, kind: Kind) -> Extracted:
    """ATX headings (outside code fences) set the heading path of the lines under them."""
    stack: list[tuple[int, str]] = []
    out: list[TextLine] = []
    fenced = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        boundary = i > 0 and not lines[i - 1].strip()
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _MD_HEAD.match(line)):
            level = len(m.group(1))
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, m.group(2))]
            boundary = True
        out.append(TextLine(i + 1, line, " > ".join(t for _, t in stack), None, boundary))
    return Extracted(kind, out)


# --- HTML --------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(("p", "div", "li", "tr", "br", "pre", "section", "article", "table", "ul", "ol",
                         "blockquote", "dt", "dd", "hr", "main", "header", "footer", "td", "th"))
_SKIP_TAGS = frozenset(("script", "style", "noscript", "template", "svg", "head"))


class _HtmlText(HTMLParser):
    """Visible text by source line; h1-h6 become headings; script/style are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_line: dict[int, list[str]] = {}
        self.heading_at: dict[int, str] = {}
        self.boundaries: set[int] = set()
        self.stack: list[tuple[int, str]] = []
        self.skipping = 0
        self.title = ""
        self._in_title = False
        self._head_level: int | None = None
        self._head_text: list[str] = []
        self._head_line = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP_TAGS and tag != "head":
            self.skipping += 1
        if tag == "title":
            self._in_title = True
        if tag in _BLOCK_TAGS or re.fullmatch(r"h[1-6]", tag):
            self.boundaries.add(self.getpos()[0])
        if re.fullmatch(r"h[1-6]", tag):
            self._head_level, self._head_text, self._head_line = int(tag[1]), [], self.getpos()[0]

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS and tag != "head" and self.skipping:
            self.skipping -= 1
        if tag == "title":
            self._in_title = False
        if re.fullmatch(r"h[1-6]", tag) and self._head_level is not None:
            title = " ".join("".join(self._head_text).split())
            level = self._head_level
            self.stack = [(lv, t) for lv, t in self.stack if lv < level] + [(level, title)]
            self.heading_at[self._head_line] = " > ".join(t for _, t in self.stack)
            self._head_level = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self.skipping:
            return
        if self._head_level is not None:
            self._head_text.append(data)
        line = self.getpos()[0]
        for offset, piece in enumerate(data.split("\n")):
            if piece.strip():
                self.by_line.setdefault(line + offset, []).append(" ".join(piece.split()))


def _html(text: str, kind: Kind) -> Extracted | Skip:
    parser = _HtmlText()
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError) as exc:  # HTMLParser is lenient; these mean "malformed"
        return _skip_malformed("HTML", exc)
    out: list[TextLine] = []
    heading = " ".join(parser.title.split())
    for number in sorted(parser.by_line):
        heading = parser.heading_at.get(number, heading)
        out.append(TextLine(number, " ".join(parser.by_line[number]), heading, None,
                            number in parser.boundaries or number in parser.heading_at))
    if not out:
        return Skip("no visible text", "HTML with no text outside scripts and styles")
    return Extracted(kind, out)


# --- data: CSV, JSON, YAML ---------------------------------------------------------


def _skip_malformed(what: str, exc: BaseException) -> Skip:
    return Skip(f"malformed {what}", " ".join(str(exc).split())[:200])


def _csv(text: str, kind: Kind) -> Extracted | Skip:
    """The header row is every line's heading, so each chunk of rows still says what its columns are."""
    lines = text.splitlines()
    dialect = "excel-tab" if "\t" in lines[0] and "," not in lines[0] else "excel"
    try:
        rows = list(csv.reader(io.StringIO(text), dialect=dialect, strict=True))
    except csv.Error as exc:
        return _skip_malformed("CSV", exc)
    if not rows:
        return Skip("empty")
    header = ", ".join(c.strip() for c in rows[0])
    widths = {len(r) for r in rows if r}
    if len(widths) > 2:
        return _skip_malformed("CSV", ValueError(f"rows have {len(widths)} different numbers of columns"))
    heading = f"columns: {header}"
    return Extracted(kind, [TextLine(i + 1, line, heading, None, True) for i, line in enumerate(lines)])


def _json(text: str, kind: Kind) -> Extracted | Skip:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return _skip_malformed("JSON", exc)
    return _code(text, kind)


_YAML_TOP = re.compile(r"^([A-Za-z0-9_.\-\"']+)\s*:")


def _yaml(text: str, kind: Kind) -> Extracted | Skip:
    """Validated with safe_load_all; each top-level key is a heading."""
    try:
        check_yaml(text)
        for _ in yaml.safe_load_all(text):
            pass
    except (yaml.YAMLError, YamlRefused) as exc:
        return _skip_malformed("YAML", exc)
    out: list[TextLine] = []
    heading = ""
    for i, line in enumerate(text.splitlines()):
        top = _YAML_TOP.match(line)
        if top:
            heading = top.group(1).strip("\"'")
        out.append(TextLine(i + 1, line, heading, None, bool(top)))
    return Extracted(kind, out)


# --- PDF ---------------------------------------------------------------------------


def _pdf(data: bytes) -> Extracted | Skip:
    """Each page's extracted text (pypdf); lines are numbered within their page."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # a damaged xref is our Skip, not a log warning
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            return Skip("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError) as exc:
        return _skip_malformed("PDF", exc)
    out: list[TextLine] = []
    title = ""
    for number, page in enumerate(pages, start=1):
        lines = page.splitlines()
        title = title or next((line.strip() for line in lines if line.strip()), "")
        for i, line in enumerate(lines):
            out.append(TextLine(i + 1, line, f"{title[:60]} (page {number})", number, i == 0))
    if not any(t.text.strip() for t in out):
        return Skip("PDF without text", "no extractable text (a scan?)")
    return Extracted("pdf", out)
