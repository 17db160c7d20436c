"""Ingest knowledge: index a folder into a knowledge base, as a Prefect flow a person runs or deploys.

Thin on purpose: the work is `tools.knowledge.ingest` (incremental, locked, bad files
counted). The flow adds what a person watching in the UI needs: a progress artifact kept
current file by file, and a summary artifact (added / changed / removed / unchanged, every
skip reason with examples, whether a damaged index was rebuilt). Re-running it on an
unchanged folder costs a read and a hash per file.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

import time

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from foreman.notifications import FAILURE_HOOKS
from foreman.settings import get_settings
from foreman.tools.knowledge.ingest import IngestProgress, IngestReport, ingest

UPDATE_EVERY_S = 1.0
SKIP_EXAMPLES = 5


class _ProgressArtifact:
    """The run's progress artifact; updated at most once a second (and at the end)."""

    def __init__(self, folder: str) -> None:
        self.id = create_progress_artifact(progress=0.0, key="ingest-progress", description=f"scanning {folder}")
        self.last = 0.0

    def __call__(self, p: IngestProgress) -> None:
        now = time.monotonic()
        if p.phase != "done" and now - self.last < UPDATE_EVERY_S:
            return
        self.last = now
        percent = 100.0 if p.phase == "done" else (100.0 * p.files_done / p.files_total if p.files_total else 0.0)
        text = (f"{p.phase}: {p.files_done} of {p.files_total} files, {p.chunks_embedded} passages embedded"
                + (f"; now {p.path}" if p.path and p.phase != "done" else ""))
        update_progress_artifact(artifact_id=self.id, progress=percent, description=text[:500])


def report_markdown(report: IngestReport) -> str:
    """The ingest's summary as a person reads it in the UI."""
    lines = [f"# Knowledge base `{report.base}`", "", f"Folder: `{report.root}`", "",
             "| added | changed | removed | unchanged | skipped | files | passages | embedded | seconds |",
             "|---|---|---|---|---|---|---|---|---|",
             (f"| {len(report.added)} | {len(report.changed)} | {len(report.removed)} | {report.unchanged} | "
              f"{report.skipped_count} | {report.files_indexed} | {report.chunks_total} | {report.chunks_embedded} | "
              f"{report.seconds:.1f} |")]
    if report.rebuilt:
        lines += ["", f"**Index rebuilt:** {report.rebuilt}"]
    for title, paths in (("Added", report.added), ("Changed", report.changed), ("Removed", report.removed)):
        if paths:
            lines += ["", f"**{title}:** " + ", ".join(f"`{p}`" for p in paths[:20])
                      + (f" and {len(paths) - 20} more" if len(paths) > 20 else "")]
    if report.skipped:
        lines += ["", "## Skipped", "", "| reason | files | examples |", "|---|---|---|"]
        for reason, paths in sorted(report.skipped.items()):
            lines.append(f"| {reason} | {len(paths)} | " + ", ".join(f"`{p}`" for p in paths[:SKIP_EXAMPLES]) + " |")
    return "\n".join(lines) + "\n"


@flow(name="ingest-knowledge", log_prints=True, **FAILURE_HOOKS)
def ingest_knowledge(folder: str, name: str | None = None) -> IngestReport:
    """Index `folder` into knowledge base `name` (default: one named after the folder).

    Only folders inside FOREMAN_KNOWLEDGE_ROOTS (default: the home folder and FOREMAN_WORKSPACE)
    may be indexed; only what changed since the last ingest is embedded again.
    """
    log = get_run_logger()
    artifact = _ProgressArtifact(folder)
    report = ingest(folder, name=name, settings=get_settings(), progress=artifact)
    if report.rebuilt:
        log.warning(report.rebuilt)
    log.info(report.summary())
    create_markdown_artifact(key="ingest-report", markdown=report_markdown(report),
                             description=f"Ingest of {report.root} into {report.base}")
    return report
