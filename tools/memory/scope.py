"""Whose memory a run may touch: decided by the run, never by a tool argument.

A `MemoryScope` sits in the run's `ToolEnv` (built from `RunPolicy.user` by `tool_env`);
the memory tools read the user from it. A run without a user has no memory at all.
Kept free of SQLite and numpy so building a run's tools imports neither.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from foreman.errors import ConfigurationError

USER_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def check_user(name: str) -> str:
    """A user name as runs and tags carry it (`user:NAME`): lower-case letters, digits, `_.-`."""
    cleaned = (name or "").strip().lower()
    if not USER_PATTERN.match(cleaned):
        raise ConfigurationError(
            f"user name {name!r} is not usable; use 1-64 lower-case letters, digits, '_', '.' or '-', "
            "starting with a letter (e.g. --user priya)")
    return cleaned


class MemoryScope(BaseModel):
    """The user whose memories this run may read and write, the thread it speaks in, the app home."""

    model_config = ConfigDict(frozen=True)

    user: str | None = None
    thread: str | None = None  # the thread a `remember` call is recorded against, when there is one
    home: Path | None = None  # None: the current settings' FOREMAN_HOME
