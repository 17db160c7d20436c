"""Walking a workspace tree for listings, search and schema enums, skipping what is unsafe.

Exists because a tree holds entries no tool may use (symlink loops, dangling links, links
out of the workspace, fifos, hardlinked files...) and one of them must not break every
listing: `_scan` yields only what `read_file` could read, skips the rest without raising,
and logs a summary. Folders are entered by descriptor (never through a symlink); a symlink
to a file is followed with the same `fd_walk` walk that reads use, so the two agree.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator

from foreman.errors import ToolRefused
from foreman.tools.fd_walk import _DIR_FLAGS, _entry
from foreman.tools.workspace import Workspace, _join, _listable, _parts, _unreadable

# The file tools log under one name, whichever module does the walking.
log = logging.getLogger("foreman.tools.files")

WALK_MAX_FILES = 20_000  # stop walking huge trees (the total then says "at least")


def _open_real_dir(root_fd: int, real: tuple[str, ...]) -> int:
    """A descriptor of the folder at `real` (no symlinks expected: any one fails the open)."""
    fd = os.dup(root_fd)
    try:
        for name in real:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _dir_entries(root_fd: int, real: tuple[str, ...]) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of the folder at `real`, sorted by name."""
    fd = _open_real_dir(root_fd, real)
    try:
        with os.scandir(fd) as it:
            return sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
    finally:
        os.close(fd)


def _scan(
    ws: Workspace, root_fd: int, start: tuple[str, ...], tool: str
) -> Iterator[tuple[bool, tuple[str, ...]]]:
    """(is_folder, path) for the visible entries under `start`, depth first.

    Folders are entered, never through a symlink. Files are yielded when `read_file`
    could read them: regular, not hardlinked (unless allowed), symlinks whose target is such
    a file inside. Everything else (loops, dangling links, links out, fifos...) is skipped,
    never raised, so one bad entry cannot break every tool; a summary is logged.
    """
    skipped: dict[str, list[str]] = {}

    def skip(reason: str, rel: tuple[str, ...]) -> None:
        skipped.setdefault(reason, []).append(_join(rel))

    stack = [start]
    try:
        while stack:
            folder = stack.pop()
            try:
                entries = _dir_entries(root_fd, folder)
            except OSError as exc:  # vanished or swapped for a symlink since it was listed
                skip(f"unreadable folder ({exc.strerror})", folder)
                continue
            subfolders: list[tuple[str, ...]] = []
            for name, st in entries:
                if not _listable(name):
                    continue
                rel = folder + (name,)
                if stat.S_ISDIR(st.st_mode):
                    subfolders.append(rel)
                    yield True, rel
                    continue
                if stat.S_ISLNK(st.st_mode):
                    try:
                        with _entry(ws, root_fd, rel, _join(rel), tool) as target:
                            st = target.st
                    except (ToolRefused, OSError) as exc:
                        skip(_skip_reason(exc), rel)
                        continue
                    if st is None or stat.S_ISDIR(st.st_mode):
                        continue  # a link to a folder: not entered, as before
                why = _unreadable(ws, st)
                if why:
                    skip(why[0], rel)
                    continue
                yield False, rel
            stack.extend(reversed(subfolders))
    finally:
        if skipped:
            log.warning(
                "file tools skipped entries under %r: %s",
                _join(start),
                "; ".join(
                    f"{why}: {', '.join(paths[:5])}" + (" ..." if len(paths) > 5 else "")
                    for why, paths in skipped.items()
                ),
            )


def _skip_reason(exc: BaseException) -> str:
    return getattr(exc, "kind", None) or f"unusable symlink ({type(exc).__name__})"


def _sorted_files(
    ws: Workspace, root_fd: int, start: tuple[str, ...], tool: str
) -> tuple[list[tuple[str, ...]], bool]:
    """Paths of the visible readable files under `start`, sorted; and whether the walk
    stopped early at WALK_MAX_FILES."""
    out: list[tuple[str, ...]] = []
    for is_folder, rel in _scan(ws, root_fd, start, tool):
        if is_folder:
            continue
        if len(out) >= WALK_MAX_FILES:
            return sorted(out, key=_join), True
        out.append(rel)
    return sorted(out, key=_join), False


def _directory(ws: Workspace, root_fd: int, directory: str, tool: str) -> tuple[str, ...]:
    """The real path of the folder `directory` names (following links inside)."""
    with _entry(ws, root_fd, _parts(ws, directory, tool), directory, tool) as entry:
        if entry.st is None or not stat.S_ISDIR(entry.st.st_mode):
            raise NotADirectoryError(
                f"{directory!r} is not a folder in the workspace; use list_files('.') to see "
                "what exists."
            )
        return entry.real
