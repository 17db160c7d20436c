"""Read a GGUF file's header: what model it is, its context length, and whether it has a chat template.

Foreman checks a model before serving it, because llama.cpp's own failures are late and
vague: a file that is not GGUF fails deep inside the server start, and a GGUF without a
chat template is served with a generic fallback template the model was never trained on,
so it answers badly without any error. Reading the header (a few MB at most, tensor data
is never touched) turns both into one clear message at pull or start time.

Format (GGUF v2/v3, little-endian): magic `GGUF`, version u32, tensor count u64, key/value
count u64, then the key/value pairs; a string is a u64 length and UTF-8 bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel

from foreman.errors import ModelFileError

MAGIC = b"GGUF"
# value type -> struct format for the fixed-size ones
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# A header bigger than this is not a model header (a 150k-token vocabulary is ~3 MB).
MAX_HEADER_BYTES = 64 * 1024 * 1024


class GGUFInfo(BaseModel):
    """What Foreman needs to know about a GGUF before serving it."""

    version: int
    architecture: str | None = None
    name: str | None = None
    context_length: int | None = None
    chat_template: str | None = None

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template and self.chat_template.strip())


def read_gguf_info(path: Path) -> GGUFInfo:
    """The header of `path`, or `ModelFileError` saying why it is not a usable GGUF."""
    try:
        with open(path, "rb") as handle:
            return _read(handle, path)
    except OSError as exc:
        raise ModelFileError(f"Cannot read model file {path}: {exc.strerror or exc}.") from exc
    except (struct.error, UnicodeDecodeError, EOFError) as exc:
        raise ModelFileError(
            f"{path} is cut short or damaged (its GGUF header does not parse: {exc}). "
            "Pull the model again, or point FOREMAN_LOCAL_MODEL_PATH at a complete .gguf file."
        ) from exc


def _read(handle: BinaryIO, path: Path) -> GGUFInfo:
    magic = handle.read(4)
    if magic != MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF model (it starts with {magic!r}, not b'GGUF'). llama.cpp serves "
            "only GGUF files: convert the model, or choose one from `foreman model list`."
        )
    (version,) = _unpack(handle, "<I")
    if version not in (2, 3):
        raise ModelFileError(f"{path} is GGUF version {version}; this llama.cpp reads versions 2 and 3.")
    _unpack(handle, "<Q")  # tensor count: not needed
    (count,) = _unpack(handle, "<Q")
    values: dict[str, Any] = {}
    wanted = ("general.architecture", "general.name", "tokenizer.chat_template")
    for _ in range(count):
        key = _string(handle)
        (kind,) = _unpack(handle, "<I")
        keep = key in wanted or key.endswith(".context_length")
        value = _value(handle, kind, keep)
        if keep:
            values[key] = value
        if handle.tell() > MAX_HEADER_BYTES:
            raise ModelFileError(f"{path}: the GGUF header is larger than {MAX_HEADER_BYTES} bytes; damaged?")
    arch = values.get("general.architecture")
    context = values.get(f"{arch}.context_length") if arch else None
    return GGUFInfo(
        version=version,
        architecture=arch,
        name=values.get("general.name"),
        context_length=int(context) if isinstance(context, int) else None,
        chat_template=values.get("tokenizer.chat_template"),
    )


def _unpack(handle: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise EOFError("unexpected end of file")
    return struct.unpack(fmt, data)


def _string(handle: BinaryIO, keep: bool = True) -> str:
    (length,) = _unpack(handle, "<Q")
    if length > MAX_HEADER_BYTES:
        raise EOFError(f"a string of {length} bytes")
    if not keep:
        handle.seek(length, 1)
        return ""
    data = handle.read(length)
    if len(data) != length:
        raise EOFError("unexpected end of file")
    return data.decode("utf-8")


def _value(handle: BinaryIO, kind: int, keep: bool) -> Any:
    if kind in _SCALARS:
        return _unpack(handle, _SCALARS[kind])[0]
    if kind == _STRING:
        return _string(handle, keep)
    if kind == _ARRAY:
        (item_kind,) = _unpack(handle, "<I")
        (length,) = _unpack(handle, "<Q")
        if item_kind in _SCALARS:  # skip fixed-size items in one seek
            handle.seek(struct.calcsize(_SCALARS[item_kind]) * length, 1)
        else:
            for _ in range(length):
                _value(handle, item_kind, keep=False)
        return None
    raise EOFError(f"unknown GGUF value type {kind}")
