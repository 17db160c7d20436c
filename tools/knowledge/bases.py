"""Knowledge-base names and the folders they may be built from.

A knowledge base (KB) is a named index of one folder. The name a folder gets by default
is derived from its real path (`workspace_base`), so `foreman knowledge ingest FOLDER`
and a run whose workspace is FOLDER build and read the same index, and two folders with
the same last name never share one. Which folders may be indexed at all is decided here
(`check_folder`): inside FOREMAN_KNOWLEDGE_ROOTS, or, when that is empty, the home folder
and FOREMAN_WORKSPACE. A run's own workspace is allowed by the run itself (its policy).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from foreman.errors import ConfigurationError, FolderNotAllowed
from foreman.settings import Settings

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    """`name` if it is a valid knowledge-base name; it becomes part of file names and SQL values."""
    if not NAME_PATTERN.match(name):
        raise ConfigurationError(
            f"knowledge base name {name!r} is not valid: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def workspace_base(folder: Path | str) -> str:
    """The default knowledge-base name of `folder`: its last name and a hash of its real path."""
    root = Path(folder).expanduser().resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-")[:40] or "root"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


def allowed_roots(settings: Settings) -> list[Path]:
    """Folders `foreman knowledge ingest` may index (anything below them too)."""
    roots = settings.knowledge_roots or [Path.home(), settings.workspace]
    return [Path(r).expanduser().resolve() for r in roots]


def check_folder(folder: Path | str, roots: Iterable[Path]) -> Path:
    """The real path of `folder`, which must be an existing folder inside one of `roots`."""
    real = Path(folder).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in roots]
    if not real.is_dir():
        raise ConfigurationError(f"{real} is not a folder; give an existing folder to index")
    if not any(real == r or r in real.parents for r in roots):
        raise FolderNotAllowed(real, roots)
    return real
