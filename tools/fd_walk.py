"""Reaching a workspace entry through folder descriptors, so a swapped path cannot escape.

Exists because checking a name and then opening it by name is a race: a process that
swaps a folder for a symlink in between could steer a tool out of the workspace. Here a
path (already through `workspace._parts`) is *opened* one component at a time relative to
a descriptor of the root, each with O_NOFOLLOW (`_Walk`). Symlinks are resolved by
reading the link and walking its target again from the root (at most MAX_SYMLINK_HOPS
links): a target outside the root, into a hidden entry, a loop or a missing target is
refused. On top of the walk: `_open_file` opens a regular file for reading and checks the
descriptor is the inode the walk saw, `_replace_at` writes a file atomically in the
folder's descriptor, and `_inside` asks the kernel where a descriptor is now.
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from foreman.errors import ToolRefused
from foreman.tools.workspace import Workspace, _hidden, _is_within, _join, _unreadable

# Like the kernel's MAXSYMLINKS. Also bounds the retries when a name changes mid-walk.
MAX_SYMLINK_HOPS = 40
OPEN_ATTEMPTS = 3  # a file swapped between lstat and open is walked to again, this often

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a fifo be swapped in after the lstat, opening it must not hang.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# An entry that changed between lstat and open (now a symlink, gone, a socket...).
_CHANGED = {errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.ENXIO}


@contextmanager
def _root_fd(ws: Workspace) -> Iterator[int]:
    """A descriptor of the root, closed afterwards: the anchor every walk starts from."""
    try:
        fd = os.open(ws.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"The workspace root {ws.root} does not exist; create it or point "
            "FOREMAN_WORKSPACE at an existing folder."
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class _Entry:
    """Where a walk ended: the open folder holding the entry, the entry's name and what
    lstat saw there. The caller owns `dir_fd` and closes it."""

    dir_fd: int
    name: str | None  # None: the entry is the folder `dir_fd` itself (the root)
    real: tuple[str, ...]  # its path below the root, with no symlink in it
    st: os.stat_result | None  # None: nothing of that name (yet)


@dataclass
class _Step:
    """One component still to walk, and the symlink (path, target) that produced it."""

    name: str
    link: tuple[str, str] | None = None


def _link_parts(
    ws: Workspace, real: list[str], target: str, path: str, tool: str
) -> tuple[str, ...]:
    """The root-relative components a symlink in folder `real` points to, or ToolRefused.

    Resolved as text against `real`, which holds no symlink, so `..` in the target means
    what the kernel would make of it.
    """
    joined = Path(posixpath.normpath(posixpath.join(ws.root.joinpath(*real), target)))
    if not _is_within(joined, ws.root):
        raise ws._refuse(
            tool,
            f"{path!r} leads through a symlink to {target!r}, which is outside the workspace",
            kind="symlink out of the workspace",
        )
    return joined.relative_to(ws.root).parts


class _Walk:
    """One walk from the root: the components still to go, the real folders entered so far
    (`real`, with `fd` the descriptor of the last one) and the links followed (`hops`).

    Folders are opened with O_NOFOLLOW|O_DIRECTORY relative to their parent's descriptor;
    a symlink is read and its target walked again from the root. The last component is
    looked at (lstat), not opened: the caller opens it relative to `fd`.
    """

    def __init__(
        self, ws: Workspace, root_fd: int, parts: tuple[str, ...], path: str, tool: str
    ) -> None:
        self.ws, self.root_fd, self.path, self.tool = ws, root_fd, path, tool
        self.pending = deque(_Step(p) for p in parts)
        self.real: list[str] = []
        self.fd = os.dup(root_fd)
        self.hops = 0

    def run(self, make_dirs: bool) -> _Entry:
        """Where the path ends; refuses links out, into hidden entries, loops and dangling
        links, raises FileNotFoundError / NotADirectoryError for plain missing folders."""
        try:
            while self.pending:
                step = self.pending.popleft()
                if _hidden(step.name):  # only a link target can bring one here
                    raise self._refuse(
                        f"leads through a symlink into the hidden entry {self._here(step)!r}; "
                        "hidden files and folders are off limits",
                        "symlink into a hidden entry",
                    )
                try:
                    st = os.stat(step.name, dir_fd=self.fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not self.pending and step.link is None:
                        return _Entry(self.fd, step.name, self._real(step), None)
                    self._missing(step, make_dirs)
                    continue
                if stat.S_ISLNK(st.st_mode):
                    self._follow(step)
                elif not self.pending:
                    return _Entry(self.fd, step.name, self._real(step), st)
                else:
                    self._enter(step, st)
            return _Entry(self.fd, None, tuple(self.real), os.fstat(self.fd))
        except BaseException:
            os.close(self.fd)
            raise

    def _here(self, step: _Step) -> str:
        return _join(self._real(step))

    def _real(self, step: _Step) -> tuple[str, ...]:
        return (*self.real, step.name)

    def _refuse(self, why: str, kind: str) -> ToolRefused:
        return self.ws._refuse(self.tool, f"{self.path!r} {why}", kind)

    def _hop(self, step: _Step) -> None:
        """Count a link followed (or a retry after a swap): a loop ends here."""
        self.hops += 1
        if self.hops > MAX_SYMLINK_HOPS:
            raise self._refuse(
                f"leads into a symlink loop at {self._here(step)!r} (more than "
                f"{MAX_SYMLINK_HOPS} links followed); name a file directly (list_files shows "
                "the readable ones)",
                "symlink loop",
            )

    def _missing(self, step: _Step, make_dirs: bool) -> None:
        """A component that is not there: a dangling link, a missing folder, or one to make."""
        if step.link is not None:
            link, target = step.link
            raise self._refuse(
                f"goes through the symlink {link!r}, whose target {target!r} does not exist; "
                "name an existing file (list_files shows them)",
                "dangling symlink",
            )
        if not make_dirs:
            raise FileNotFoundError(
                f"There is no folder {self._here(step)!r} in the workspace (from "
                f"{self.path!r}); use list_files to see what exists."
            )
        self._hop(step)  # bounds a mkdir/lstat tug of war
        with suppress(FileExistsError):  # someone else made it: look again
            os.mkdir(step.name, dir_fd=self.fd)
        self.pending.appendleft(step)

    def _follow(self, step: _Step) -> None:
        """Replace a symlink by its target's components and start again from the root."""
        self._hop(step)
        try:
            target = os.readlink(step.name, dir_fd=self.fd)
        except OSError:  # no longer a symlink: look again
            self.pending.appendleft(step)
            return
        # The target's components inherit the link, for the dangling check; the rest of
        # the path keeps its own origin.
        origin = (self._here(step), target)
        parts = _link_parts(self.ws, self.real, target, self.path, self.tool)
        self.pending.extendleft(reversed([_Step(p, origin) for p in parts]))
        os.close(self.fd)
        self.fd, self.real = os.dup(self.root_fd), []

    def _enter(self, step: _Step, st: os.stat_result) -> None:
        """Open the folder `step` names, relative to the current one, never through a link."""
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(
                f"{self._here(step)!r} is a file, not a folder (in {self.path!r}); use "
                "list_files to see what exists."
            )
        try:
            child = os.open(step.name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno not in _CHANGED:
                raise
            self._hop(step)  # swapped since the lstat (e.g. for a symlink): look again
            self.pending.appendleft(step)
            return
        os.close(self.fd)
        self.fd = child
        self.real.append(step.name)


@contextmanager
def _entry(
    ws: Workspace,
    root_fd: int,
    parts: tuple[str, ...],
    path: str,
    tool: str,
    *,
    make_dirs: bool = False,
) -> Iterator[_Entry]:
    """The walk's end, with its folder descriptor closed afterwards whatever happens."""
    entry = _Walk(ws, root_fd, parts, path, tool).run(make_dirs)
    try:
        yield entry
    finally:
        os.close(entry.dir_fd)


def _inside(ws: Workspace, fd: int) -> bool:
    """Where the kernel says an open descriptor is now, as a last check.

    The walk cannot see a folder being moved out of the workspace after it was entered;
    /proc can. Without /proc the walk alone must do.
    """
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return _is_within(Path(where.removesuffix(" (deleted)")), ws.root)


def _open_file(
    ws: Workspace, root_fd: int, parts: tuple[str, ...], path: str, tool: str
) -> tuple[int, os.stat_result, tuple[str, ...]]:
    """A read descriptor of the regular file `parts` names, its fstat and real path.

    The file is opened relative to its folder's descriptor with O_NOFOLLOW, and fstat must
    show the very inode the walk saw (a regular file, inside); if anything was swapped in
    between, the walk starts again.
    """
    for _ in range(OPEN_ATTEMPTS):
        with _entry(ws, root_fd, parts, path, tool) as entry:
            if entry.st is None:
                raise FileNotFoundError(
                    f"There is no file {path!r} in the workspace; use list_files to see what exists."
                )
            if entry.name is None or stat.S_ISDIR(entry.st.st_mode):
                raise IsADirectoryError(
                    f"{path!r} is a folder; use list_files({path!r}) to see inside it."
                )
            why = _unreadable(ws, entry.st)  # before opening: never open a device or fifo
            if why:
                raise ws._refuse(tool, f"{path!r} {why[1]}", why[0])
            try:
                fd = os.open(entry.name, _READ_FLAGS, dir_fd=entry.dir_fd)
            except OSError as exc:
                if exc.errno in _CHANGED:
                    continue
                raise
            st = os.fstat(fd)
            same = (st.st_dev, st.st_ino) == (entry.st.st_dev, entry.st.st_ino)
            if same and _unreadable(ws, st) is None and _inside(ws, fd):
                return fd, st, entry.real
            os.close(fd)
    raise ws._refuse(tool, f"{path!r} kept changing while it was being opened; try again later")


# --- writing ------------------------------------------------------------------------------


def _replace_at(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Put `data` at `name` in the folder `dir_fd` atomically: a temporary file created in
    that same folder descriptor, renamed over `name` (a symlink there is replaced, not
    followed)."""
    tmp = f".foreman-{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
