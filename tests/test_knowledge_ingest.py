"""Knowledge ingest and search on real files, the shipped embedding model and the SQLite index.

No Prefect and no chat model here: the folder walk, the readers, incremental re-ingest,
bad input, the lock and the rebuild of a damaged index.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from foreman.errors import FolderNotAllowed, UnknownKnowledgeBase
from foreman.settings import get_settings
from foreman.tools.knowledge.embedding import default_embedder
from foreman.tools.knowledge.ingest import IngestProgress, ingest
from foreman.tools.knowledge.service import find_passages, list_bases

pytestmark = pytest.mark.usefixtures("foreman_home")

DEMO = Path(__file__).resolve().parent.parent / "demo" / "workspace"


class CountingEmbedder:
    """The real model, counting what it is asked to embed (to prove what was re-embedded)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.inner = default_embedder()
        self.model_id, self.dim = self.inner.model_id, self.inner.dim
        self.texts: list[str] = []
        self.delay_s = delay_s

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        time.sleep(self.delay_s)
        return self.inner.embed(texts)


def folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    root = tmp_path / "kb"
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


NOTES = {
    "notes/vpn.md": "# VPN\n\nWireGuard runs on fw01.\nIt listens on UDP port 51820.\n\n## Peers\n\n- sam-phone 10.8.0.2\n",
    "todo.txt": "1. Replace the failing fan in pve2.\n2. Rotate the backup token before 2026-11-30.\n",
    "logs/upload.log": "03:00:01 INFO upload start files=42\n03:01:40 ERROR failed auth.log: 403 token expired\n",
}


def search(root_base: str, query: str, k: int = 3) -> list:
    return find_passages([root_base], query, k)


def test_ingest_then_search_finds_the_source_and_line(tmp_path: Path) -> None:
    root = folder(tmp_path, NOTES)
    report = ingest(root, roots=[tmp_path])

    assert sorted(report.added) == sorted(NOTES) and report.unchanged == 0 and not report.removed
    best = search(report.base, "Which port does WireGuard listen on?")[0]
    assert best.path == "notes/vpn.md"
    assert best.line_start <= 4 <= best.line_end  # "It listens on UDP port 51820." is line 4
    assert best.heading == "VPN"
    assert best.source == f"notes/vpn.md:{best.line_start}-{best.line_end}"
    log_hit = search(report.base, "403 token expired")[0]
    assert (log_hit.path, log_hit.line_start <= 2 <= log_hit.line_end) == ("logs/upload.log", True)
    assert [b.name for b in list_bases()] == [report.base]


def test_reingest_embeds_only_the_changed_file_and_drops_deleted_ones(tmp_path: Path) -> None:
    root = folder(tmp_path, NOTES)
    first = CountingEmbedder()
    base = ingest(root, roots=[tmp_path], embedder=first).base
    assert len(first.texts) > 0

    (root / "todo.txt").write_text("1. Order a Noctua NF-A8 fan for pve2.\n")
    (root / "logs/upload.log").unlink()
    (root / "notes/new.md").write_text("# New\n\nThe UPS battery is an APCRBC124.\n")
    again = CountingEmbedder()
    report = ingest(root, roots=[tmp_path], embedder=again)

    assert report.changed == ["todo.txt"] and report.added == ["notes/new.md"]
    assert report.removed == ["logs/upload.log"] and report.unchanged == 1
    assert all(("todo.txt" in t) or ("notes/new.md" in t) for t in again.texts)  # vpn.md was not re-embedded
    assert report.chunks_embedded == len(again.texts) == 2
    assert search(base, "Noctua fan")[0].path == "todo.txt"
    assert all(p.path != "logs/upload.log" for p in search(base, "403 token expired upload", k=5))

    untouched = CountingEmbedder()
    report = ingest(root, roots=[tmp_path], embedder=untouched)
    assert (report.unchanged, report.chunks_embedded, untouched.texts) == (3, 0, [])


def test_pdf_and_html_text_are_found_with_page_and_line(tmp_path: Path) -> None:
    files = {"docs/warranty-summary.pdf": (DEMO / "docs/warranty-summary.pdf").read_bytes(),
             "docs/isp-contract.html": (DEMO / "docs/isp-contract.html").read_text(),
             "notes/other.md": "# Other\n\nNothing about batteries or contracts here.\n"}
    report = ingest(folder(tmp_path, files), roots=[tmp_path])

    pdf = search(report.base, "replacement battery cartridge for the UPS")[0]
    assert (pdf.path, pdf.page) == ("docs/warranty-summary.pdf", 2)
    assert "APCRBC124" in pdf.text and pdf.source.startswith("docs/warranty-summary.pdf:p2:")
    html = search(report.base, "fault hotline phone number")[0]
    assert html.path == "docs/isp-contract.html" and "0800 555 0199" in html.text
    assert "console.log" not in html.text  # scripts are not text
    lines = (DEMO / "docs/isp-contract.html").read_text().splitlines()
    assert "0800 555 0199" in "\n".join(lines[html.line_start - 1:html.line_end])  # the HTML's own lines
    assert html.heading == "Internet contract > Support"


def test_bad_files_are_skipped_and_counted_never_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "knowledge_max_file_bytes", 2_000)
    root = folder(tmp_path, {
        "good.md": "# Good\n\nThe NAS is nas01.\n",
        "image.png": b"\x89PNG\r\n\x1a\n\x00\x00",
        "blob.dat": b"abc\x00def",
        "latin1.txt": "caf\xe9".encode("latin-1"),
        "broken.json": '{"a": 1,',
        "broken.yaml": "a: [1, 2\nb: }",
        "broken.pdf": b"%PDF-1.4\nthis is not really a pdf",
        "huge.txt": "x" * 5_000,
        "empty.txt": "   \n",
        ".env": "SECRET=1",
    })
    (root / "fifo").parent.mkdir(exist_ok=True)
    import os

    os.mkfifo(root / "fifo")
    report = ingest(root, roots=[tmp_path])

    assert report.added == ["good.md"]
    reasons = {reason: paths for reason, paths in report.skipped.items()}
    assert reasons["binary"] == ["blob.dat", "image.png"]
    assert reasons["not UTF-8 text"] == ["latin1.txt"]
    assert reasons["malformed JSON"] == ["broken.json"]
    assert reasons["malformed YAML"] == ["broken.yaml"]
    assert reasons["malformed PDF"] == ["broken.pdf"]
    assert reasons["empty"] == ["empty.txt"]
    assert reasons["hidden (never indexed)"] == [".env"]
    assert any("larger than 2000 bytes" in r for r in reasons) and ["huge.txt"] in reasons.values()
    assert any("regular file" in r for r in reasons)  # the fifo, never opened
    assert report.skipped_count == 10
    assert "skipped 10" in report.summary()


def test_a_folder_outside_the_allowed_roots_is_refused(tmp_path: Path) -> None:
    root = folder(tmp_path, NOTES)
    with pytest.raises(FolderNotAllowed, match="outside the folders knowledge may be built from"):
        ingest(root, roots=[tmp_path / "elsewhere"])
    with pytest.raises(FolderNotAllowed):
        ingest("/etc")  # default roots: the home folder and FOREMAN_WORKSPACE
    assert list_bases() == []


def test_searching_an_unknown_base_names_the_known_ones(tmp_path: Path) -> None:
    base = ingest(folder(tmp_path, NOTES), roots=[tmp_path]).base
    with pytest.raises(UnknownKnowledgeBase, match=base):
        find_passages(["nope"], "fan")


def test_concurrent_ingests_of_one_base_are_serialised(tmp_path: Path) -> None:
    root = folder(tmp_path, NOTES)
    spans: dict[str, list[float]] = {}
    reports = {}

    def run(who: str) -> None:
        def track(p: IngestProgress) -> None:
            spans.setdefault(who, []).append(time.monotonic())

        reports[who] = ingest(root, roots=[tmp_path], embedder=CountingEmbedder(delay_s=0.3), progress=track)

    threads = [threading.Thread(target=run, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    first, second = sorted(spans, key=lambda w: spans[w][0])
    assert spans[first][-1] <= spans[second][0], "the two ingests interleaved"
    assert len(reports[first].added) == 3 and reports[first].chunks_embedded > 0
    assert reports[second].unchanged == 3 and reports[second].chunks_embedded == 0  # found the work done
    assert reports[second].waited_s > 0.2


def test_a_damaged_index_is_rebuilt_with_a_clear_message(tmp_path: Path) -> None:
    root = folder(tmp_path, NOTES)
    base = ingest(root, roots=[tmp_path]).base
    db = get_settings().knowledge_db
    db.write_bytes(b"this is not a database " * 200)
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)

    report = ingest(root, roots=[tmp_path])

    assert report.rebuilt and "damaged" in report.rebuilt and "moved to" in report.rebuilt
    aside = list(db.parent.glob(db.name + ".damaged-*"))
    assert aside and aside[0].read_bytes().startswith(b"this is not a database")
    assert len(report.added) == 3  # everything indexed again
    assert search(base, "WireGuard port")[0].path == "notes/vpn.md"


def test_the_demo_workspace_indexes_every_kind_it_ships(tmp_path: Path) -> None:
    report = ingest(DEMO, name="demo", roots=[DEMO])
    assert report.skipped == {"binary": ["assets/rack-photo.png"]}
    assert report.files_indexed >= 30
    kinds = {p.suffix for p in (DEMO / f for f in report.added)}
    assert {".md", ".txt", ".html", ".pdf", ".csv", ".yaml", ".json", ".log", ".py", ".sh"} <= kinds
    best = find_passages(["demo"], "What does the Q3 report recommend?", 5)
    assert any(p.path == "report.txt" and p.line_start <= 8 <= p.line_end for p in best)


def test_a_spent_time_budget_defers_files_to_the_next_ingest(tmp_path: Path) -> None:
    root = folder(tmp_path, NOTES)
    base = ingest(root, roots=[tmp_path]).base
    (root / "todo.txt").write_text("1. Order a new UPS battery.\n")
    (root / "notes/new.md").write_text("# New\n\nThe spare disk is on the shelf.\n")

    late = ingest(root, roots=[tmp_path], time_budget_s=0.0)
    assert sorted(late.deferred) == ["notes/new.md", "todo.txt"] and not late.added and not late.changed
    assert not late.removed and "left for the next ingest" in late.summary()
    assert search(base, "failing fan pve2")[0].path == "todo.txt"  # the old version is still searchable

    caught_up = ingest(root, roots=[tmp_path])
    assert (caught_up.added, caught_up.changed, caught_up.deferred) == (["notes/new.md"], ["todo.txt"], [])
