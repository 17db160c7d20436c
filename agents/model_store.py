"""Where pulled models live, which one is selected, and whether a model is installed.

Pulled GGUFs live in `<FOREMAN_HOME>/models/` (or FOREMAN_LOCAL_MODELS_DIR), each with a
small `<file>.verified` record of the hash it was checked against and the size and
modification time it had then: a later pull (install.sh runs one every time) sees the
file is the verified one without hashing a gigabyte again, and needs no network.

The selection (`foreman model use NAME`) is one small JSON file under the home. The model
to serve is, in order: FOREMAN_LOCAL_MODEL_PATH (any GGUF), FOREMAN_LOCAL_MODEL (a
catalogue name), the selection, the catalogue default.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from pathlib import Path

from pydantic import BaseModel

from foreman.agents.model_catalog import CATALOG, DEFAULT_MODEL, CatalogEntry, get_entry
from foreman.errors import LocalModelError, StateFileError
from foreman.settings import Settings


class VerifiedRecord(BaseModel):
    """What a pull checked: the hash, and the file's size and mtime when it matched."""

    sha256: str
    size: int
    mtime_ns: int


class Selection(BaseModel):
    name: str


def models_dir(settings: Settings) -> Path:
    return (settings.local_models_dir or settings.home / "models").expanduser()


def selection_path(settings: Settings) -> Path:
    return settings.home.expanduser() / "local-model" / "selected.json"


def record_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + ".verified")


def site_packages() -> Path:
    """This interpreter's site-packages, where the part packages install."""
    return Path(sysconfig.get_path("purelib"))


def in_place_path(entry: CatalogEntry) -> Path:
    """Where an in-place model's one package keeps its GGUF (found without importing it)."""
    part = entry.parts[0]
    top = part.path.split("/", 1)[0]
    spec = importlib.util.find_spec(top)
    for location in (spec.submodule_search_locations or []) if spec else []:
        return Path(location).parent / part.path
    return site_packages() / part.path


def target_path(entry: CatalogEntry, settings: Settings) -> Path:
    """Where `entry`'s GGUF is (or will be, once pulled)."""
    return in_place_path(entry) if entry.in_place else models_dir(settings) / entry.file_name


def is_verified(path: Path, entry: CatalogEntry) -> bool:
    """Whether `path` is the file a pull verified: same hash, unchanged size and mtime since."""
    try:
        record = VerifiedRecord.model_validate_json(record_path(path).read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return record.sha256 == entry.sha256 and record.size == stat.st_size == entry.size \
        and record.mtime_ns == stat.st_mtime_ns


def write_record(path: Path, sha256: str) -> None:
    stat = path.stat()
    record = VerifiedRecord(sha256=sha256, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    _atomic_write(record_path(path), record.model_dump_json())


def installed_path(entry: CatalogEntry, settings: Settings) -> Path | None:
    """The model's file if it is installed (present with the catalogue's size), else None.

    The hash is checked by the pull; serving checks size only, so a start costs no
    gigabyte read, yet a file cut short (a disk that filled up) is never served.
    """
    path = target_path(entry, settings)
    try:
        return path if path.is_file() and path.stat().st_size == entry.size else None
    except OSError:
        return None


def selected_name(settings: Settings) -> str:
    """FOREMAN_LOCAL_MODEL, else `foreman model use`'s choice, else the catalogue default."""
    if settings.local_model:
        return settings.local_model
    path = selection_path(settings)
    if not path.exists():
        return DEFAULT_MODEL
    try:
        return Selection.model_validate_json(path.read_text()).name
    except (OSError, ValueError) as exc:
        raise StateFileError(path, f"the model selection cannot be read ({exc})") from exc


def select(name: str, settings: Settings, catalog: dict[str, CatalogEntry] | None = None) -> CatalogEntry:
    """Make `name` the model Foreman serves (`foreman model use`). It must be installed."""
    entry = get_entry(name, catalog)
    if installed_path(entry, settings) is None:
        raise LocalModelError(
            f"{name} is not installed, so it was not selected (still serving {selected_name(settings)}). "
            f"Pull it first: foreman model pull {name}"
        )
    _atomic_write(selection_path(settings), Selection(name=name).model_dump_json())
    return entry


def resolve_entry(settings: Settings, catalog: dict[str, CatalogEntry] | None = None) -> tuple[CatalogEntry, Path]:
    """The selected catalogue model and its installed file, or an error naming the pull command."""
    catalog = CATALOG if catalog is None else catalog
    name = selected_name(settings)
    entry = get_entry(name, catalog)
    path = installed_path(entry, settings)
    if path is None:
        how = "FOREMAN_LOCAL_MODEL" if settings.local_model else (
            "`foreman model use`" if selection_path(settings).exists() else "the default")
        raise LocalModelError(
            f"The local model {name} ({how}) is not installed in {target_path(entry, settings).parent}. "
            f"Run `foreman model pull {name}` ({entry.size / 1e9:.1f} GB from the package registry), "
            "or pick an installed one with `foreman model use NAME` (see `foreman model list`), "
            "or set FOREMAN_LOCAL_MODEL_PATH to a GGUF file."
        )
    return entry, path


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temp name in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def describe_source(settings: Settings) -> str:
    """Why this model is served, in a few words (for `foreman model`)."""
    if settings.local_model_path:
        return "FOREMAN_LOCAL_MODEL_PATH"
    if settings.local_model:
        return f"FOREMAN_LOCAL_MODEL={settings.local_model}"
    if selection_path(settings).exists():
        return f"selected with `foreman model use {selected_name(settings)}`"
    return f"the default, {DEFAULT_MODEL}"


__all__ = [
    "Selection",
    "VerifiedRecord",
    "describe_source",
    "in_place_path",
    "installed_path",
    "is_verified",
    "models_dir",
    "record_path",
    "resolve_entry",
    "select",
    "selected_name",
    "selection_path",
    "site_packages",
    "target_path",
    "write_record",
]
