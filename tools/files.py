"""File tools confined to one folder, the workspace.

Every path an agent gives is relative to the workspace root. `Workspace.resolve` is the
single gate: it refuses `..` escapes, absolute paths elsewhere, and symlinks (at any
point along the path) whose real target lies outside the root. Each function below goes
through it, so a guard cannot be forgotten by one tool and remembered by another.

Choices a caller may rely on:
- Listings skip hidden entries (names starting with "."), so `.git` and `.env` never
  reach a model's context or a tool schema. `read_file` can still read a hidden file
  when asked for it by name.
- `read_file` *truncates* a file larger than `max_read_bytes` and says so in an explicit
  marker line; it *refuses* binary or non-UTF-8 files (text is all a model can use).
- `write_file` is off unless `allow_write`; it never writes inside `.git` (hooks there
  would be code execution), writes atomically and caps the size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, field_validator

from foreman.errors import ToolRefused

# Defaults that are not (yet) settings.
FILE_MAX_WRITE_BYTES = 1_000_000
LIST_MAX_ENTRIES = 500
SEARCH_MAX_MATCHES = 100
SEARCH_MAX_FILES = 2_000
SEARCH_MAX_LINE_CHARS = 300
WALK_MAX_FILES = 20_000  # stop walking huge trees (the total then says "at least")
BINARY_SNIFF_BYTES = 8_192


class Workspace(BaseModel):
    """The one folder file tools may touch, and what they may do there."""

    root: Path
    allow_write: bool = False
    max_read_bytes: int
    max_write_bytes: int = FILE_MAX_WRITE_BYTES

    @field_validator("root")
    @classmethod
    def _resolve_root(cls, value: Path) -> Path:
        # Resolve once, so every containment check compares real paths.
        return Path(value).expanduser().resolve()

    @classmethod
    def from_settings(cls, settings: Any, allow_write: bool = False) -> Workspace:
        return cls(
            root=settings.workspace,
            allow_write=allow_write,
            max_read_bytes=settings.file_max_read_bytes,
        )

    def _refuse(self, tool: str, why: str) -> ToolRefused:
        return ToolRefused(tool, f"{why}; paths are relative to the workspace root {self.root}")

    def resolve(self, path: str, tool: str = "files") -> Path:
        """The real path inside the root that `path` names, or ToolRefused.

        Returns the fully resolved path (symlinks followed), so callers act on exactly
        the file that was checked.
        """
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"The workspace root {self.root} does not exist; create it or point "
                "FOREMAN_WORKSPACE at an existing folder."
            )
        if "\x00" in path:
            raise self._refuse(tool, f"{path!r} contains a NUL byte")
        text = path.strip() or "."
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        # Lexical check first: catches '..' escapes even for paths that do not exist.
        lexical = Path(os.path.normpath(candidate))
        if not _is_within(lexical, self.root):
            raise self._refuse(tool, f"{path!r} is outside the workspace")
        # Then the real check: a symlink anywhere along the path may point elsewhere.
        real = lexical.resolve()
        if not _is_within(real, self.root):
            raise self._refuse(
                tool, f"{path!r} leads through a symlink to {real}, which is outside the workspace"
            )
        return real

    def relative(self, real: Path) -> str:
        """The POSIX path of `real` relative to the root ('.' for the root itself)."""
        rel = real.relative_to(self.root).as_posix()
        return rel or "."


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_files(ws: Workspace, start: Path) -> Iterator[Path]:
    """The visible files under `start` whose real target is inside the root."""
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        # Prune in place: hidden dirs are never entered (symlinked dirs are not followed).
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for name in filenames:
            if _hidden(name):
                continue
            full = Path(dirpath) / name
            real = full.resolve()
            # A symlinked file may point out of the workspace: leave it out.
            if _is_within(real, ws.root) and real.is_file():
                yield full


def _sorted_files(ws: Workspace, start: Path) -> tuple[list[str], bool]:
    """Relative paths of the visible files under `start`, sorted; and whether the walk
    stopped early at WALK_MAX_FILES."""
    out: list[str] = []
    for full in _walk_files(ws, start):
        if len(out) >= WALK_MAX_FILES:
            return sorted(out), True
        out.append(ws.relative(full))
    return sorted(out), False


def _walk_dirs(ws: Workspace, start: Path) -> Iterator[Path]:
    for dirpath, dirnames, _ in os.walk(start, followlinks=False):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        yield Path(dirpath)


def _directory(ws: Workspace, directory: str, tool: str) -> Path:
    real = ws.resolve(directory, tool)
    if not real.is_dir():
        raise NotADirectoryError(
            f"{directory!r} is not a folder in the workspace; use list_files('.') to see "
            "what exists."
        )
    return real


def list_files(ws: Workspace, directory: str = ".") -> list[str]:
    """Relative POSIX paths of the files under `directory`, recursive and sorted.

    Hidden files and folders are skipped. After LIST_MAX_ENTRIES paths the last entry is
    a note saying how many more exist, so the model knows the list is partial.
    """
    start = _directory(ws, directory, "list_files")
    found, stopped = _sorted_files(ws, start)
    paths = found[:LIST_MAX_ENTRIES]
    more = len(found) - len(paths)
    if more or stopped:
        paths.append(
            f"... and {'at least ' if stopped else ''}{more} more files not listed "
            f"(limit {LIST_MAX_ENTRIES}); list a subfolder to see them"
        )
    return paths


def workspace_paths(ws: Workspace, limit: int = 200) -> list[str]:
    """Up to `limit` real file paths, for an enum in a tool schema (no invented paths)."""
    return _sorted_files(ws, ws.root)[0][:limit]


def workspace_dirs(ws: Workspace, limit: int = 200) -> list[str]:
    """Up to `limit` folder paths, "." first, for an enum in a tool schema."""
    dirs = sorted(ws.relative(full) for full in _walk_dirs(ws, ws.root) if full != ws.root)
    return (["."] + dirs)[:limit]


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head[:BINARY_SNIFF_BYTES]


def _decode(data: bytes, truncated: bool) -> str | None:
    """UTF-8 text, or None. A cut may split a multi-byte character: drop that tail."""
    for trim in range(4 if truncated else 1):
        try:
            return data[: len(data) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def read_file(ws: Workspace, path: str) -> str:
    """The text of a workspace file.

    Files over `max_read_bytes` are cut there and end with a line
    "[... truncated: showed the first N of M bytes ...]". Binary or non-UTF-8 files
    are refused, since the model could not use them anyway.
    """
    real = ws.resolve(path, "read_file")
    if real.is_dir():
        raise IsADirectoryError(f"{path!r} is a folder; use list_files({path!r}) to see inside it.")
    if not real.is_file():
        raise FileNotFoundError(
            f"There is no file {path!r} in the workspace; use list_files to see what exists."
        )
    size = real.stat().st_size
    with real.open("rb") as handle:
        data = handle.read(ws.max_read_bytes)
    truncated = size > len(data)
    if _looks_binary(data):
        raise ToolRefused("read_file", f"{path!r} is a binary file; only text files can be read")
    text = _decode(data, truncated)
    if text is None:
        raise ToolRefused(
            "read_file", f"{path!r} is not UTF-8 text; only UTF-8 text files can be read"
        )
    if truncated:
        text += (
            f"\n[... truncated: showed the first {len(data)} of {size} bytes; "
            "use search_files to find a specific part ...]"
        )
    return text


def search_files(ws: Workspace, query: str, directory: str = ".") -> list[dict[str, Any]]:
    """Lines containing `query` (case-insensitive) in the text files under `directory`.

    Each match is {"path", "line_number", "line"}. Binary, non-UTF-8 and hidden files are
    skipped, as is anything past `max_read_bytes` in a file. After SEARCH_MAX_MATCHES
    matches the last entry is {"note": ...} saying the result is partial.
    """
    if not query.strip():
        raise ToolRefused("search_files", "the query is empty; give a word or phrase to look for")
    start = _directory(ws, directory, "search_files")
    needle = query.casefold()
    matches: list[dict[str, Any]] = []
    paths, _ = _sorted_files(ws, start)
    for count, rel in enumerate(paths):
        if count >= SEARCH_MAX_FILES:
            matches.append({"note": f"stopped after {SEARCH_MAX_FILES} files; search a subfolder"})
            break
        full = ws.root / rel
        with full.open("rb") as handle:
            data = handle.read(ws.max_read_bytes)
        if _looks_binary(data):
            continue
        text = _decode(data, truncated=True)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if needle in line.casefold():
                if len(matches) >= SEARCH_MAX_MATCHES:
                    matches.append(
                        {
                            "note": f"more than {SEARCH_MAX_MATCHES} matches; narrow the query or folder"
                        }
                    )
                    return matches
                matches.append(
                    {
                        "path": rel,
                        "line_number": number,
                        "line": line[:SEARCH_MAX_LINE_CHARS],
                    }
                )
    return matches


def write_file(ws: Workspace, path: str, content: str) -> str:
    """Write `content` (UTF-8) to a workspace file, atomically, creating parent folders.

    Refused unless the workspace allows writing, for paths inside `.git`, and for content
    over `max_write_bytes`. Readers never see a half-written file: the text goes to a
    temporary file in the same folder, which then replaces the target.
    """
    if not ws.allow_write:
        raise ToolRefused(
            "write_file",
            "writing is off for this workspace; the file tools may only read here "
            "(a flow must grant write access explicitly)",
        )
    real = ws.resolve(path, "write_file")
    rel = ws.relative(real)
    if ".git" in Path(rel).parts:
        raise ToolRefused(
            "write_file", f"{path!r} is inside .git; write ordinary project files only"
        )
    if real.is_dir():
        raise ToolRefused("write_file", f"{path!r} is a folder; give a file path inside it")
    data = content.encode("utf-8")
    if len(data) > ws.max_write_bytes:
        raise ToolRefused(
            "write_file",
            f"the content is {len(data)} bytes; at most {ws.max_write_bytes} bytes may be written",
        )
    real.parent.mkdir(parents=True, exist_ok=True)
    # Keep an existing file's mode; new files get rw-r--r-- (mkstemp would give rw-------).
    mode = real.stat().st_mode & 0o777 if real.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(dir=real.parent, prefix=".foreman-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, real)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return f"Wrote {len(data)} bytes to {rel}."
