"""File tools confined to one folder, the workspace.

Every path an agent gives is relative to the workspace root. It is first checked as text
(`_parts`: no `..` escape, no absolute path elsewhere, no `~`, NUL, backslash or hidden
component), then *opened* one component at a time relative to a descriptor of the root,
each with O_NOFOLLOW (`_Walk`). A name is never checked and then opened again by name, so
a process that swaps a folder for a symlink mid-call cannot steer a tool out of the
workspace. Symlinks are resolved by reading the link and walking its target again from
the root (at most MAX_SYMLINK_HOPS links): a target outside the root, a loop or a missing
target is refused when the path is named, and skipped (and logged) in listings.

Choices a caller may rely on:
- Hidden entries (names starting with ".") are off limits: listings skip them, and naming
  one (`.git`, `.env`, `notes/.secret`, or a symlink into one) is refused, so they never
  reach a model's context or a tool schema.
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

import errno
import logging
import os
import posixpath
import secrets
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, field_validator

from foreman.errors import ToolRefused

log = logging.getLogger(__name__)

# Defaults that are not (yet) settings.
FILE_MAX_WRITE_BYTES = 1_000_000
LIST_MAX_ENTRIES = 500
SEARCH_MAX_MATCHES = 100
SEARCH_MAX_FILES = 2_000
SEARCH_MAX_LINE_CHARS = 300
WALK_MAX_FILES = 20_000  # stop walking huge trees (the total then says "at least")
BINARY_SNIFF_BYTES = 8_192
# Like the kernel's MAXSYMLINKS. Also bounds the retries when a name changes mid-walk.
MAX_SYMLINK_HOPS = 40
OPEN_ATTEMPTS = 3  # a file swapped between lstat and open is walked to again, this often

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a fifo be swapped in after the lstat, opening it must not hang.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# An entry that changed between lstat and open (now a symlink, gone, a socket...).
_CHANGED = {errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.ENXIO}
HARDLINK_SETTING = "FOREMAN_FILE_ALLOW_HARDLINKS"


class Workspace(BaseModel):
    """The one folder file tools may touch, and what they may do there."""

    root: Path
    allow_write: bool = False
    allow_hardlinks: bool = False
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
            allow_hardlinks=getattr(settings, "file_allow_hardlinks", False),
            max_read_bytes=settings.file_max_read_bytes,
        )

    def _refuse(self, tool: str, why: str, kind: str = "refused") -> ToolRefused:
        """A refusal that says where paths are allowed; `kind` lets a listing say why it
        skipped an entry without parsing the message."""
        refusal = ToolRefused(tool, f"{why}; paths are relative to the workspace root {self.root}")
        refusal.kind = kind  # type: ignore[attr-defined]
        return refusal


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _listable(name: str) -> bool:
    """Whether a listing may show `name`: only names `_parts` would accept back."""
    return not _hidden(name) and "\\" not in name


def _join(parts: tuple[str, ...] | list[str]) -> str:
    return "/".join(parts) or "."


# --- the lexical gate ------------------------------------------------------------------


def _parts(ws: Workspace, path: str, tool: str) -> tuple[str, ...]:
    """The components of `path` below the root, normalised, or ToolRefused.

    Text only: nothing is looked up here. What survives can still be a symlink out, which
    `_Walk` refuses when it meets it.
    """
    if "\x00" in path:
        raise ws._refuse(tool, f"{path!r} contains a NUL byte; give a plain relative path")
    if "\\" in path:
        raise ws._refuse(tool, f"{path!r} contains a backslash; separate folders with '/'")
    text = path.strip() or "."
    if text.startswith("~"):
        # Not expanded: a home folder is outside the workspace (and '~user' costs a lookup).
        raise ws._refuse(tool, f"{path!r} starts with '~', which is not expanded here")
    candidate = Path(text) if text.startswith("/") else ws.root / text
    # normpath: '..' and '.' go lexically; the walk below never goes up a folder itself.
    lexical = Path(posixpath.normpath(candidate))
    if not _is_within(lexical, ws.root):
        raise ws._refuse(tool, f"{path!r} is outside the workspace")
    parts = lexical.relative_to(ws.root).parts
    hidden = next((p for p in parts if _hidden(p)), None)
    if hidden is not None:
        raise ws._refuse(
            tool,
            f"{path!r} names the hidden entry {hidden!r}; hidden files and folders (.git, "
            ".env, ...) are off limits, name a visible path (list_files shows them)",
        )
    return parts


# --- the walk: every component opened relative to a folder descriptor --------------------


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


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _unreadable(ws: Workspace, st: os.stat_result) -> tuple[str, str] | None:
    """Why a (non-folder) entry may not be read, as (short label, sentence), or None.
    Shared by reads (which refuse) and listings (which skip), so both agree."""
    if not stat.S_ISREG(st.st_mode):
        return (
            "not a regular file",
            f"is a {_kind(st.st_mode)}, not a regular file; only regular text files can be read",
        )
    if st.st_nlink > 1 and not ws.allow_hardlinks:
        return (
            f"hardlinked (set {HARDLINK_SETTING}=true to include)",
            (
                f"has {st.st_nlink} hard links, so its contents may be a file outside the "
                f"workspace; hardlinked files are refused unless {HARDLINK_SETTING}=true"
            ),
        )
    return None


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


# --- walking a tree (listings, search, schema enums) ------------------------------------


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
            # Keep an existing file's mode; new files get rw-r--r--.
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
            _replace_at(entry.dir_fd, entry.name, data, mode)
            return f"Wrote {len(data)} bytes to {_join(entry.real)}."
