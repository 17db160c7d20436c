"""The files of a folder an ingest may read, and why each other entry was left out.

The same confinement as the file tools, from the same primitives (`fd_walk`, `fd_scan`,
`workspace`): folders entered by descriptor, never through a symlink; a symlink to a file
followed only inside the folder; hidden entries (`.git`, `.env`) never read; fifos,
devices and hardlinked files refused. Unlike the file tools' walk, which only logs what it
skips, this one returns every reason, because an ingest must count them for the person.
Reading (`read_confined`) goes through the file tools' `_open_file`, which re-checks the
entry it opens, so a file swapped for a link between the walk and the read is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from foreman.errors import ToolRefused
from foreman.tools.fd_scan import _dir_entries, _skip_reason
from foreman.tools.fd_walk import _entry, _open_file, _root_fd
from foreman.tools.workspace import Workspace, _hidden, _join, _unreadable

MAX_FILES = 50_000
TOOL = "ingest"


@dataclass
class Walked:
    files: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    stopped: bool = False

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(path)


def walk(ws: Workspace, root_fd: int, max_files: int = MAX_FILES) -> Walked:
    """Readable files under the root, sorted; every other entry with its reason."""
    out = Walked()
    stack: list[tuple[str, ...]] = [()]
    while stack:
        folder = stack.pop()
        try:
            entries = _dir_entries(root_fd, folder)
        except OSError as exc:
            out.skip(f"unreadable folder ({exc.strerror})", _join(folder))
            continue
        subfolders = []
        for name, st in entries:
            rel = folder + (name,)
            if _hidden(name):
                out.skip("hidden (never indexed)", _join(rel))
                continue
            if "\\" in name:
                out.skip("name with a backslash", _join(rel))
                continue
            if stat.S_ISDIR(st.st_mode):
                subfolders.append(rel)
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    with _entry(ws, root_fd, rel, _join(rel), TOOL) as target:
                        st = target.st
                except (ToolRefused, OSError) as exc:
                    out.skip(_skip_reason(exc), _join(rel))
                    continue
                if st is None or stat.S_ISDIR(st.st_mode):
                    out.skip("symlink to a folder (not followed)", _join(rel))
                    continue
            why = _unreadable(ws, st)
            if why:
                out.skip(why[0], _join(rel))
                continue
            if len(out.files) >= max_files:
                out.stopped = True
                return out
            out.files.append(_join(rel))
        stack.extend(reversed(subfolders))
    out.files.sort()
    return out


@contextmanager
def opened_root(ws: Workspace) -> Iterator[int]:
    with _root_fd(ws) as fd:
        yield fd


def read_confined(ws: Workspace, root_fd: int, rel: str, limit: int) -> tuple[bytes | None, int]:
    """(content, size) of a walked file; content is None when the file is larger than `limit`."""
    fd, st, _ = _open_file(ws, root_fd, tuple(rel.split("/")), rel, TOOL)
    with os.fdopen(fd, "rb") as handle:
        if st.st_size > limit:
            return None, st.st_size
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew since fstat
        return None, len(data)
    return data, len(data)
