"""`foreman knowledge ingest|list|search|drop`: build and query the knowledge bases agents draw on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from foreman.cli._output import console, fail, reporting, ui_hint

knowledge_app = typer.Typer(help="Knowledge bases: folders indexed for search and grounding.", no_args_is_help=True)


@knowledge_app.command("ingest")
def knowledge_ingest(
    folder: Annotated[Path, typer.Argument(help="The folder to index (inside FOREMAN_KNOWLEDGE_ROOTS).")],
    name: Annotated[str | None, typer.Option(help="Knowledge base name (default: from the folder's path).")] = None,
) -> None:
    """Index FOLDER (Markdown, text, HTML, PDF, code, CSV/YAML/JSON, logs); only changes are re-embedded."""
    from foreman.flows.ingest import ingest_knowledge
    from foreman.tools.knowledge.ingest import IngestProgress, progress_listener

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[passages]} passages embedded"), TimeElapsedColumn(), console=console)
    job = bar.add_task("scanning", total=None, passages=0)

    def show(p: IngestProgress) -> None:
        bar.update(job, description=p.phase if p.phase != "embed" else "indexing", completed=p.files_done,
                   total=p.files_total or None, passages=p.chunks_embedded)

    with reporting():  # refused here, before a flow run exists, rather than as a Failed run
        from foreman.settings import get_settings
        from foreman.tools.knowledge.bases import allowed_roots, check_folder

        check_folder(folder, allowed_roots(get_settings()))
    with reporting(), bar, progress_listener(show):
        state = ingest_knowledge(folder=str(folder), name=name, return_state=True)
        if state.is_failed():
            state.result()  # raises the ingest's own error, which `reporting` prints in one line
        report = state.result()
    if report.rebuilt:
        console.print(f"[yellow]{report.rebuilt}[/yellow]", highlight=False)
    console.print(report.summary(), highlight=False)
    for reason, paths in sorted(report.skipped.items()):
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        console.print(f"  [dim]skipped ({reason}): {', '.join(paths[:3])}{more}[/dim]", highlight=False)
    console.print(f"[dim]search it: foreman knowledge search QUERY --kb {report.base}; {ui_hint()}[/dim]",
                  highlight=False)


@knowledge_app.command("list")
def knowledge_list() -> None:
    """The knowledge bases: folder, files, passages, when last ingested."""
    from foreman.tools.knowledge.service import list_bases

    with reporting():
        bases = list_bases()
    if not bases:
        console.print("no knowledge bases yet; build one with: foreman knowledge ingest FOLDER")
        return
    table = Table("name", "folder", "files", "passages", "ingested", "model")
    for b in bases:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b.ingested)) if b.ingested else "-"
        table.add_row(b.name, b.root, str(b.files), str(b.chunks), when, b.model)
    console.print(table)


@knowledge_app.command("search")
def knowledge_search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    kb: Annotated[list[str] | None, typer.Option("--kb", help="Knowledge base(s) to search (default: all).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many passages.", min=1, max=20)] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, vector or keyword.")] = "hybrid",
) -> None:
    """Print the passages that best match QUERY, each with its source path:line."""
    from foreman.tools.knowledge.service import find_passages, list_bases

    if mode not in ("hybrid", "vector", "keyword"):
        fail(f"--mode {mode!r}: use hybrid, vector or keyword", 2)
    with reporting():
        bases = kb or [b.name for b in list_bases()]
    if not bases:
        fail("no knowledge bases yet; build one with: foreman knowledge ingest FOLDER", 2)
    with reporting():
        passages = find_passages(bases, query, k, mode=mode)  # type: ignore[arg-type]
    if not passages:
        console.print("no passages found")
    for number, p in enumerate(passages, start=1):
        console.print(f"[bold]{number}. {p.source}[/bold] [dim]{p.base} · score {p.score:.4f}"
                      + (f" · {p.heading}" if p.heading else "") + "[/dim]", highlight=False)
        console.print(p.text, highlight=False, markup=False)
        console.print()


@knowledge_app.command("drop")
def knowledge_drop(name: Annotated[str, typer.Argument(help="The knowledge base to forget.")]) -> None:
    """Forget knowledge base NAME and its passages (the folder itself is not touched)."""
    from foreman.errors import UnknownKnowledgeBase
    from foreman.tools.knowledge.service import drop_base, list_bases

    with reporting():
        if not drop_base(name):
            raise UnknownKnowledgeBase(name, [b.name for b in list_bases()])
    console.print(f"dropped knowledge base {name}")
