"""The vocabulary of a `run_python` call: the limits a snippet runs under and its result.

Its own module so that both halves of the tool can use it without importing each other:
`foreman.tools.sandbox` sizes its mounts from these limits and quotes them when it says
what is isolated, and `foreman.tools.code` applies them and returns a `CodeResult`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Defaults that are not (yet) settings.
CODE_MAX_FILE_BYTES = 32 * 1024 * 1024  # largest single file the code may write
CODE_MAX_OPEN_FILES = 256
CODE_DISK_MB = 64  # bwrap: the tmpfs holding the working folder and /tmp
CODE_SHM_MB = 16  # bwrap: the tmpfs at /dev/shm (at most; never more than disk_mb)


class CodeLimits(BaseModel):
    """What a snippet may use before it is stopped."""

    timeout_s: float = Field(gt=0, description="Wall-clock limit; the process group is killed.")
    cpu_s: int = Field(gt=0, description="CPU seconds (RLIMIT_CPU) per process.")
    memory_mb: int = Field(gt=0, description="Address space (RLIMIT_AS) per process.")
    max_output_bytes: int = Field(gt=0, description="Cap for stdout and for stderr, each.")
    disk_mb: int = Field(
        default=CODE_DISK_MB,
        gt=0,
        description=(
            "bwrap: size of the memory-backed tmpfs for the working folder and /tmp together "
            f"(/dev/shm gets up to {CODE_SHM_MB} MB more). Counts against the host's RAM, "
            "not against memory_mb."
        ),
    )

    @property
    def shm_mb(self) -> int:
        return min(self.disk_mb, CODE_SHM_MB)

    @classmethod
    def from_settings(cls, settings: Any) -> CodeLimits:
        return cls(
            timeout_s=settings.code_timeout_s,
            cpu_s=settings.code_cpu_s,
            memory_mb=settings.code_memory_mb,
            max_output_bytes=settings.code_max_output_bytes,
            # getattr: duck-typed settings from before this limit existed still work.
            disk_mb=getattr(settings, "code_disk_mb", CODE_DISK_MB),
        )


class CodeResult(BaseModel):
    """What happened. A non-zero exit or a timeout is a result, not an exception."""

    exit_code: int = Field(
        description="Negative: killed by that signal (-9 on timeout, -24 over the CPU limit)."
    )
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool = Field(description="True if stdout or stderr went over the cap.")
    isolation: str = Field(description="The sandbox and limits that were applied.")
