"""What the media tools accept: the file kinds, and how big or long a file may be.

One place decides, before any decoder runs, so that an unsupported or oversized file is refused with a
message that says what to do, and nothing has been decoded yet. (Where a file may come
from is the file tools' rule: `foreman.engine.attachments` reads through their walk.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from foreman.errors import MediaRefused, ToolRefused

Kind = Literal["pdf", "image", "audio", "text"]

SUFFIXES: dict[str, Kind] = {
    ".pdf": "pdf",
    **{s: "image" for s in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")},
    **{s: "audio" for s in (".wav", ".mp3", ".ogg", ".flac", ".m4a")},
    **{s: "text" for s in (".txt", ".md", ".csv", ".json", ".yaml", ".yml", ".log", ".conf",
                           ".ini", ".toml", ".py", ".sh", ".html", ".xml")},
}


class MediaLimits(BaseModel):
    """How big or long an attached file may be (FOREMAN_MEDIA_*)."""

    max_file_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_pdf_pages: int = Field(default=200, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    max_audio_s: float = Field(default=1800.0, gt=0)

    @classmethod
    def from_settings(cls, settings: Any) -> MediaLimits:
        # getattr: duck-typed settings from before these limits existed still work.
        return cls(
            max_file_bytes=getattr(settings, "media_max_file_mb", 50) * 1024 * 1024,
            max_pdf_pages=getattr(settings, "media_max_pdf_pages", 200),
            max_image_pixels=getattr(settings, "media_max_image_pixels", 40_000_000),
            max_audio_s=getattr(settings, "media_max_audio_s", 1800.0),
        )


def kind_of(name: str, tool: str = "attach") -> Kind:
    """The kind of file `name` is by its suffix, or MediaRefused naming the kinds accepted."""
    suffix = Path(name).suffix.lower()
    kind = SUFFIXES.get(suffix)
    if kind is None:
        accepted = ", ".join(sorted(SUFFIXES))
        raise MediaRefused(
            tool,
            f"{name!r} is a {suffix or 'suffix-less'} file, which Foreman cannot read; attach a "
            f"PDF, an image, an audio file or a text file ({accepted}), or convert it first",
        )
    return kind


def check_size(path: Path, limits: MediaLimits, tool: str = "attach") -> int:
    """The file's size, or MediaRefused when it is over the limit."""
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise MediaRefused(
            tool,
            f"{path.name} is {size / 1e6:.1f} MB, over the {limits.max_file_bytes / 1e6:.0f} MB "
            "limit for one attached file; split or shrink it, or raise FOREMAN_MEDIA_MAX_FILE_MB",
        )
    if size == 0:
        raise MediaRefused(tool, f"{path.name} is empty; attach a file with something in it")
    return size


def refuse_if(condition: bool, tool: str, reason: str) -> None:
    """Raise MediaRefused(tool, reason) when `condition` holds (keeps the checks one line each)."""
    if condition:
        raise MediaRefused(tool, reason)


__all__ = ["Kind", "MediaLimits", "MediaRefused", "ToolRefused", "check_size",
           "kind_of", "refuse_if"]
