"""File tools confined to one folder, the workspace: the tools agents call.

Every path an agent gives is relative to the workspace root. It is first checked as text
(`workspace._parts`), then *opened* one component at a time relative to a descriptor of
the root, each with O_NOFOLLOW (`fd_walk`); trees are listed by `fd_scan`. This module
holds the tools themselves: `list_files`, `read_file`, `search_files`, `write_file`, and
`workspace_paths` / `workspace_dirs` for tool-schema enums. Every name the split-out
modules define is re-exported here, so `files.Workspace` and friends keep working.

Choices a caller may rely on:
- Hidden entries (names starting with ".") are off limits: listings skip them, and naming
  one (`.git`, `.env`, `notes/.secret`, or a symlink into one) is refused, so they never
  reach a model's context or a tool schema.
- Symlinks are followed only within the workspace: a target outside the root, a loop or
  a missing target is refused when the path is named, and skipped (and logged) in listings.
- Only regular files are read: folders, fifos, sockets and devices are refused (a fifo
  is never opened, so a tool cannot hang on it). A file with more than one hard link is
  refused unless `allow_hardlinks` (FOREMAN_FILE_ALLOW_HARDLINKS): its other name may be
  outside the workspace, where no path check can see it.
- `read_file` *truncates* a file larger than `max_read_bytes` and says so in an explicit
  marker line; it *refuses* binary or non-UTF-8 files (text is all a model can use).
- `write_file` is off unless `allow_write`; it never writes inside `.git` (hooks there
  would be code execution), writes atomically (a temporary file created in the target's
  folder descriptor, then renamed over the target) and caps the size.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from foreman.errors import ToolRefused
from foreman.tools.fd_scan import (
    WALK_MAX_FILES,
    _dir_entries,
    _directory,
    _open_real_dir,
    _scan,
    _skip_reason,
    _sorted_files,
)
from foreman.tools.fd_walk import (
    _CHANGED,
    _DIR_FLAGS,
    _READ_FLAGS,
    _TEMP_FLAGS,
    MAX_SYMLINK_HOPS,
    OPEN_ATTEMPTS,
    _Entry,
    _entry,
    _inside,
    _link_parts,
    _open_file,
    _replace_at,
    _root_fd,
    _Step,
    _Walk,
)
from foreman.tools.workspace import (
    FILE_MAX_WRITE_BYTES,
    HARDLINK_SETTING,
    Workspace,
    _hidden,
    _is_within,
    _join,
    _kind,
    _listable,
    _parts,
    _unreadable,
)

# Everything `foreman.tools.files` defined before the split stays importable from here:
# the tools, and (for tests and callers that reach in) the helpers now in other modules.
__all__ = [
    "BINARY_SNIFF_BYTES",
    "FILE_MAX_WRITE_BYTES",
    "HARDLINK_SETTING",
    "LIST_MAX_ENTRIES",
    "MAX_SYMLINK_HOPS",
    "OPEN_ATTEMPTS",
    "SEARCH_MAX_FILES",
    "SEARCH_MAX_LINE_CHARS",
    "SEARCH_MAX_MATCHES",
    "WALK_MAX_FILES",
    "_CHANGED",
    "_DIR_FLAGS",
    "_READ_FLAGS",
    "_TEMP_FLAGS",
    "Workspace",
    "_Entry",
    "_Step",
    "_Walk",
    "_decode",
    "_dir_entries",
    "_directory",
    "_entry",
    "_hidden",
    "_inside",
    "_is_within",
    "_join",
    "_kind",
    "_link_parts",
    "_listable",
    "_looks_binary",
    "_open_file",
    "_open_real_dir",
    "_parts",
    "_read_head",
    "_replace_at",
    "_root_fd",
    "_scan",
    "_skip_reason",
    "_sorted_files",
    "_unreadable",
    "list_files",
    "log",
    "read_file",
    "search_files",
    "workspace_dirs",
    "workspace_paths",
    "write_file",
]

log = logging.getLogger(__name__)

# Defaults that are not (yet) settings. They live here, beside the tools that read them,
# so that patching `files.LIST_MAX_ENTRIES` (as tests do) still changes what the tools do.
LIST_MAX_ENTRIES = 500
SEARCH_MAX_MATCHES = 100
SEARCH_MAX_FILES = 2_000
SEARCH_MAX_LINE_CHARS = 300
BINARY_SNIFF_BYTES = 8_192


# --- listing ------------------------------------------------------------------------------


def list_files(ws: Workspace, directory: str = ".") -> list[str]:
    """Relative POSIX paths of the files under `directory`, recursive and sorted.

    Hidden files and folders are skipped. After LIST_MAX_ENTRIES paths the last entry is
    a note saying how many more exist, so the model knows the list is partial.
    """
    with _root_fd(ws) as root_fd:
        start = _directory(ws, root_fd, directory, "list_files")
        found, stopped = _sorted_files(ws, root_fd, start, "list_files")
    paths = [_join(p) for p in found[:LIST_MAX_ENTRIES]]
    more = len(found) - len(paths)
    if more or stopped:
        paths.append(
            f"... and {'at least ' if stopped else ''}{more} more files not listed "
            f"(limit {LIST_MAX_ENTRIES}); list a subfolder to see them"
        )
    return paths


def workspace_paths(ws: Workspace, limit: int = 200) -> list[str]:
    """Up to `limit` real file paths, for an enum in a tool schema (no invented paths)."""
    try:
        with _root_fd(ws) as root_fd:
            found, _ = _sorted_files(ws, root_fd, (), "read_file")
    except FileNotFoundError:  # no workspace yet: no paths to offer
        return []
    return [_join(p) for p in found[:limit]]


def workspace_dirs(ws: Workspace, limit: int = 200) -> list[str]:
    """Up to `limit` folder paths, "." first, for an enum in a tool schema."""
    dirs: list[str] = []
    try:
        with _root_fd(ws) as root_fd:
            for is_folder, rel in _scan(ws, root_fd, (), "list_files"):
                if is_folder:
                    dirs.append(_join(rel))
                    if len(dirs) >= WALK_MAX_FILES:
                        break
    except FileNotFoundError:
        pass
    return (["."] + sorted(dirs))[:limit]


# --- reading ------------------------------------------------------------------------------


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


def _read_head(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from `fd`, which this closes."""
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def read_file(ws: Workspace, path: str) -> str:
    """The text of a workspace file.

    Files over `max_read_bytes` are cut there and end with a line
    "[... truncated: showed the first N of M bytes ...]". Binary or non-UTF-8 files
    are refused, since the model could not use them anyway.
    """
    with _root_fd(ws) as root_fd:
        fd, st, _ = _open_file(ws, root_fd, _parts(ws, path, "read_file"), path, "read_file")
        data = _read_head(fd, ws.max_read_bytes)
    size = st.st_size
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
    needle = query.casefold()
    matches: list[dict[str, Any]] = []
    with _root_fd(ws) as root_fd:
        start = _directory(ws, root_fd, directory, "search_files")
        paths, _ = _sorted_files(ws, root_fd, start, "search_files")
        for count, parts in enumerate(paths):
            if count >= SEARCH_MAX_FILES:
                matches.append(
                    {"note": f"stopped after {SEARCH_MAX_FILES} files; search a subfolder"}
                )
                break
            rel = _join(parts)
            try:  # opened afresh, through the same walk as read_file
                fd, _, _ = _open_file(ws, root_fd, parts, rel, "search_files")
            except (ToolRefused, OSError) as exc:  # changed since the listing
                log.info("search_files skipped %r: %s", rel, exc)
                continue
            data = _read_head(fd, ws.max_read_bytes)
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
                        {"path": rel, "line_number": number, "line": line[:SEARCH_MAX_LINE_CHARS]}
                    )
    return matches


# --- writing ------------------------------------------------------------------------------


def _refuse_code_paths(ws: Workspace, real: Path, path: str) -> None:
    """A file a script step of this run will execute (or a module it imports from its own
    folder) is code: writing it would run whatever was written, outside the sandbox."""
    guarded = set(ws.runs_as_code)
    if real in guarded or (real.suffix == ".py" and real.parent in guarded):
        raise ws._refuse(
            "write_file",
            f"{path!r} is run by a script step of this run, so writing it would be running code; "
            "write another file, or allow code for the run (--allow-code / allow_code=True)",
        )


def write_file(ws: Workspace, path: str, content: str) -> str:
    """Write `content` (UTF-8) to a workspace file, atomically, creating parent folders.

    Refused unless the workspace allows writing, for hidden paths (so `.git` too), for
    non-regular targets and for content over `max_write_bytes`. Readers never see a
    half-written file. A file with other hard links is replaced, not written through, so
    its other names keep their contents.
    """
    if not ws.allow_write:
        raise ToolRefused(
            "write_file",
            "writing is off for this workspace; the file tools may only read here "
            "(a flow must grant write access explicitly)",
        )
    data = content.encode("utf-8")
    if len(data) > ws.max_write_bytes:
        raise ToolRefused(
            "write_file",
            f"the content is {len(data)} bytes; at most {ws.max_write_bytes} bytes may be written",
        )
    with _root_fd(ws) as root_fd:
        parts = _parts(ws, path, "write_file")
        if not parts:
            raise ToolRefused("write_file", f"{path!r} is a folder; give a file path inside it")
        with _entry(ws, root_fd, parts, path, "write_file", make_dirs=True) as entry:
            st = entry.st
            if entry.name is None or (st is not None and stat.S_ISDIR(st.st_mode)):
                raise ToolRefused("write_file", f"{path!r} is a folder; give a file path inside it")
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise ws._refuse(
                    "write_file",
                    f"{path!r} is a {_kind(st.st_mode)}; only regular files can be written",
                )
            if not _inside(ws, entry.dir_fd):
                raise ws._refuse(
                    "write_file", f"{path!r} was moved out of the workspace; try again"
                )
            _refuse_code_paths(ws, ws.root.joinpath(*entry.real), path)
            # Keep an existing file's mode; new files get rw-r--r--.
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
            _replace_at(entry.dir_fd, entry.name, data, mode)
            return f"Wrote {len(data)} bytes to {_join(entry.real)}."
