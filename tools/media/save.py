"""Bytes (a chart, a speech file) written into the workspace by the file tools' own guards.

The same rules as `write_file`: only when the run may write, never a hidden path, never
through a symlink or into a special file, atomically (a reader never sees half a PNG);
only the size limit differs, because a PNG or a wav is larger than a text file.
"""

from __future__ import annotations

import stat

from foreman.errors import ToolRefused
from foreman.tools.fd_walk import _entry, _inside, _replace_at, _root_fd
from foreman.tools.workspace import Workspace, _join, _parts

MAX_MEDIA_WRITE_BYTES = 20 * 1024 * 1024


def write_bytes(ws: Workspace, path: str, data: bytes, tool: str) -> str:
    """Write `data` to the workspace file `path`; returns its path relative to the root."""
    if not ws.allow_write:
        raise ToolRefused(tool, "writing is off for this workspace, so the file cannot be kept there; "
                                "run with --allow-write (allow_write=True) to let it save files")
    if len(data) > MAX_MEDIA_WRITE_BYTES:
        raise ToolRefused(tool, f"the file is {len(data)} bytes; at most {MAX_MEDIA_WRITE_BYTES} may be written")
    with _root_fd(ws) as root_fd:
        parts = _parts(ws, path, tool)
        if not parts:
            raise ToolRefused(tool, f"{path!r} is a folder; give a file path inside it")
        with _entry(ws, root_fd, parts, path, tool, make_dirs=True) as entry:
            st = entry.st
            if entry.name is None or (st is not None and not stat.S_ISREG(st.st_mode)):
                raise ws._refuse(tool, f"{path!r} is not a regular file; give a new file name")
            if not _inside(ws, entry.dir_fd):
                raise ws._refuse(tool, f"{path!r} was moved out of the workspace; try again")
            _replace_at(entry.dir_fd, entry.name, data, 0o644)
            return _join(entry.real)
