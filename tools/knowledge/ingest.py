"""Index a folder into a knowledge base, incrementally, one ingest of a base at a time.

What a person can rely on:
- Only what changed is re-embedded: each file's fingerprint is the chunker version and
  the sha256 of its bytes; an unchanged file costs one read and one hash. Files gone from
  the folder (or now unreadable) leave the index. The report counts added, changed,
  removed and unchanged files, and every skipped one by reason.
- A bad file (binary, not UTF-8, malformed, too large, refused by the walk) is skipped and
  counted, never fatal. A folder outside the allowed roots is refused before anything.
- Two ingests of one base never interleave: a file lock per base serialises them (across
  threads and processes); the second then finds the work done. Each file's passages are
  replaced in one transaction, so an interrupted ingest leaves every file either old or new.
- A damaged index file is moved aside and rebuilt (`store.open_store`); the report says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from foreman.errors import ConfigurationError, KnowledgeBusy, ToolRefused
from foreman.settings import Settings, get_settings
from foreman.tools.knowledge.bases import allowed_roots, check_folder, check_name, workspace_base
from foreman.tools.knowledge.chunking import CHUNKER_VERSION, chunk_lines
from foreman.tools.knowledge.embedding import Embedder, default_embedder
from foreman.tools.knowledge.readers import Skip, extract, is_binary_name
from foreman.tools.knowledge.store import FileState, KnowledgeStore, open_knowledge
from foreman.tools.knowledge.walk import opened_root, read_confined, walk
from foreman.tools.workspace import Workspace

log = logging.getLogger("foreman.knowledge")
LOCK_POLL_S = 0.2
LOCK_TIMEOUT_S = 900.0


class IngestProgress(BaseModel):
    """Where an ingest is: after the scan `files_total` is known, chunks as they are embedded."""

    base: str
    phase: Literal["scan", "embed", "done"]
    files_done: int = 0
    files_total: int = 0
    chunks_embedded: int = 0
    path: str = ""


ProgressFn = Callable[[IngestProgress], None]


class IngestReport(BaseModel):
    """What an ingest did, for the person (CLI, Prefect artifact) and for benchmarks."""

    base: str
    root: str
    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    unchanged: int = 0
    skipped: dict[str, list[str]] = Field(default_factory=dict)
    files_indexed: int = 0
    chunks_total: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    waited_s: float = 0.0
    rebuilt: str | None = None
    stopped_early: bool = False
    deferred: list[str] = Field(default_factory=list, description="changed or new files left for a later ingest "
                                                                     "because the time budget ran out")

    @property
    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_embedded / self.embed_seconds if self.embed_seconds else 0.0

    def summary(self) -> str:
        skips = ", ".join(f"{reason}: {len(paths)}" for reason, paths in sorted(self.skipped.items()))
        line = (f"{self.base}: {len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
                f"{self.unchanged} unchanged; {self.files_indexed} files, {self.chunks_total} passages "
                f"({self.chunks_embedded} embedded) in {self.seconds:.1f} s")
        if skips:
            line += f"; skipped {self.skipped_count} ({skips})"
        if self.stopped_early:
            line += "; stopped at the file limit: index a subfolder"
        if self.deferred:
            line += f"; {len(self.deferred)} changed or new files left for the next ingest (time budget)"
        return line


# --- progress listeners (the CLI's progress bar) -------------------------------------

_listeners: list[ProgressFn] = []
_listeners_lock = threading.Lock()


@contextmanager
def progress_listener(fn: ProgressFn) -> Iterator[ProgressFn]:
    """Call `fn` with every ingest's progress in this process while the block runs (flows run
    their body in another thread, which a context variable would not reach)."""
    with _listeners_lock:
        _listeners.append(fn)
    try:
        yield fn
    finally:
        with _listeners_lock:
            _listeners.remove(fn)


def _notify(progress: IngestProgress, extra: ProgressFn | None) -> None:
    for fn in [*list(_listeners), *([extra] if extra else [])]:
        try:
            fn(progress)
        except Exception:  # (a broken progress display must never stop an ingest)
            log.exception("progress listener failed")


# --- the lock ---------------------------------------------------------------------


@contextmanager
def base_lock(home: Path, name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[float]:
    """Hold the base's lock file (yields the seconds waited); `KnowledgeBusy` after `timeout_s`."""
    folder = home / "knowledge-locks"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(folder / f"{name}.lock", "a") as handle:
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > timeout_s:
                    raise KnowledgeBusy(f"another ingest of knowledge base {name!r} has held its lock for "
                                        f"{waited:.0f} s; nothing was changed, try again when it ends") from None
                if not told:
                    log.info("waiting for another ingest of knowledge base %r to finish", name)
                    told = True
                time.sleep(LOCK_POLL_S)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the ingest -------------------------------------------------------------------


def fingerprint(data: bytes) -> str:
    return f"{CHUNKER_VERSION}:{hashlib.sha256(data).hexdigest()}"


def ingest(
    folder: Path | str,
    *,
    name: str | None = None,
    roots: Iterable[Path] | None = None,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
    store: KnowledgeStore | None = None,
    progress: ProgressFn | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    time_budget_s: float | None = None,
) -> IngestReport:
    """Bring knowledge base `name` (default: the folder's own name) up to date with `folder`.

    `roots` are the folders it may be inside (default: `allowed_roots(settings)`); a run's
    grounding passes its workspace. `store` and `embedder` default to the app's index under
    FOREMAN_HOME and the shipped model. With `time_budget_s`, files that would need embedding
    once the budget is spent are left as they were (`deferred`), for the next ingest: a run's
    grounding must not wait an hour for a big folder's first index.
    """
    settings = settings or get_settings()
    started = time.monotonic()
    root = check_folder(folder, allowed_roots(settings) if roots is None else roots)
    name = check_name(name or workspace_base(root))
    embedder = embedder or default_embedder()
    with base_lock(settings.home, name, lock_timeout_s) as waited:
        rebuilt = None
        if store is None:
            opened = open_knowledge(settings, embedder.dim, verify=True)
            store, rebuilt = opened.store, opened.rebuilt
            if rebuilt:
                log.warning(rebuilt)
        report = IngestReport(base=name, root=str(root), waited_s=waited, rebuilt=rebuilt)
        _prepare_base(store, name, root, embedder)
        deadline = None if time_budget_s is None else started + time_budget_s
        _sync(store, embedder, name, root, settings, report, progress, deadline)
        info = store.finish_ingest(name)
    report.files_indexed, report.chunks_total = info.files, info.chunks
    report.seconds = time.monotonic() - started
    _notify(IngestProgress(base=name, phase="done", files_done=info.files, files_total=info.files,
                           chunks_embedded=report.chunks_embedded), progress)
    log.info(report.summary())
    return report


def _prepare_base(store: KnowledgeStore, name: str, root: Path, embedder: Embedder) -> None:
    info = store.base(name) or store.create_base(name, str(root), embedder.model_id)
    if info.root != str(root):
        raise ConfigurationError(f"knowledge base {name!r} indexes {info.root}, not {root}; drop it first "
                                 f"(`foreman knowledge drop {name}`) or give another --name")
    if info.model != embedder.model_id:
        log.warning("knowledge base %r was embedded with %s; re-embedding everything with %s",
                    name, info.model, embedder.model_id)
        store.reset_base(name, embedder.model_id)


def _sync(store: KnowledgeStore, embedder: Embedder, name: str, root: Path, settings: Settings,
          report: IngestReport, progress: ProgressFn | None, deadline: float | None) -> None:
    limit = settings.knowledge_max_file_bytes
    ws = Workspace(root=root, max_read_bytes=limit, allow_hardlinks=settings.file_allow_hardlinks)
    known = store.files(name)
    kept: set[str] = set()
    with opened_root(ws) as root_fd:
        walked = walk(ws, root_fd)
        report.stopped_early = walked.stopped
        for reason, paths in walked.skipped.items():
            report.skipped.setdefault(reason, []).extend(paths)
        total = len(walked.files)
        _notify(IngestProgress(base=name, phase="scan", files_total=total), progress)
        for done, rel in enumerate(walked.files, start=1):
            late = deadline is not None and time.monotonic() > deadline
            state = _index_file(store, embedder, name, ws, root_fd, rel, known.get(rel), report, late)
            if state is not None:
                kept.add(rel)
            _notify(IngestProgress(base=name, phase="embed", files_done=done, files_total=total,
                                   chunks_embedded=report.chunks_embedded, path=rel), progress)
    report.removed = sorted(set(known) - kept)
    if report.removed:
        store.remove_files(name, report.removed)


def _index_file(store: KnowledgeStore, embedder: Embedder, name: str, ws: Workspace, root_fd: int, rel: str,
                before: FileState | None, report: IngestReport, late: bool = False) -> FileState | None:
    """Index one file if it changed; the state it is indexed with, or None when it is skipped.
    `late`: the time budget is spent, so a file that needs embedding keeps its old state."""

    def skip(reason: str) -> None:
        report.skipped.setdefault(reason, []).append(rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))

    if rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace") != rel:
        skip("its name is not UTF-8; rename it")  # no text can hold it: not in a passage, a path or a store
        return None
    if is_binary_name(rel):
        skip("binary")
        return None
    try:
        data, size = read_confined(ws, root_fd, rel, ws.max_read_bytes)
    except ToolRefused as exc:
        skip(getattr(exc, "kind", None) or "refused")
        return None
    except OSError as exc:
        skip(f"unreadable ({exc.strerror or type(exc).__name__})")
        return None
    if data is None:
        skip(f"larger than {ws.max_read_bytes} bytes (FOREMAN_KNOWLEDGE_MAX_FILE_BYTES)")
        return None
    digest = fingerprint(data)
    if before is not None and before.fingerprint == digest:
        report.unchanged += 1
        return before
    if late:
        report.deferred.append(rel)
        return before
    try:
        extracted = extract(rel, data)
    except RecursionError:
        skip("malformed (nested too deeply)")
        return None
    if isinstance(extracted, Skip):
        skip(extracted.reason)
        if extracted.detail:
            log.info("skipped %s: %s (%s)", rel, extracted.reason, extracted.detail)
        return None
    chunks = chunk_lines(rel, extracted.lines)
    if not chunks:
        skip("no text")
        return None
    watch = time.monotonic()
    vectors = embedder.embed([c.search_text for c in chunks])
    report.embed_seconds += time.monotonic() - watch
    state = FileState(path=rel, fingerprint=digest, size=size, chunks=len(chunks), kind=extracted.kind)
    store.put_file(name, state, chunks, vectors)
    report.chunks_embedded += len(chunks)
    (report.changed if before is not None else report.added).append(rel)
    return state
