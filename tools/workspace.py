"""The workspace and the rules a path or entry must pass before any file tool uses it.

Exists so that *what is allowed* lives apart from *how it is enforced*: the `Workspace`
model (the one folder file tools may touch, and whether they may write or read hardlinked
files there), the lexical gate `_parts` every path an agent gives goes through first (no
`..` escape, no absolute path elsewhere, no `~`, NUL, backslash or hidden component), and
`_unreadable`, the one judgement of which entries may be read, shared by reads (which
refuse) and listings (which skip) so both agree. Nothing here opens a file or looks a name
up; the descriptor walk in `fd_walk` does that.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from foreman.errors import ToolRefused

# Defaults that are not (yet) settings.
FILE_MAX_WRITE_BYTES = 1_000_000
HARDLINK_SETTING = "FOREMAN_FILE_ALLOW_HARDLINKS"


class Workspace(BaseModel):
    """The one folder file tools may touch, and what they may do there."""

    root: Path
    allow_write: bool = False
    allow_hardlinks: bool = False
    max_read_bytes: int
    max_write_bytes: int = FILE_MAX_WRITE_BYTES
    runs_as_code: tuple[Path, ...] = Field(
        default=(), description="Files a script step of this run executes, and the folders whose `.py` files "
        "a Python script step imports first: writing there would be running code, so write_file refuses.")

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


# --- which entries may be read -----------------------------------------------------------


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
