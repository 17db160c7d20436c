"""The workspace's tables: every table-shaped file as typed Parquet, with one catalogue of cards.

`sync_tables(folder)` walks the folder with the knowledge index's confinement (no symlink out,
no dotfiles, no fifos), reads only the files that may hold tables, and re-reads a file only when
its bytes changed (the same sha256 fingerprint the knowledge index keys on). Each table is
written by DuckDB to a Parquet file (types kept, `_source` = `path:line` for every row) and
described by a `TableCard`: clean name, typed columns, row count, three sample rows, the few
values a short text column takes. The catalogue is one JSON file replaced atomically, under a
lock, so two runs never see half a sync.

Why Parquet and not one DuckDB file: a DuckDB file admits one writing process; runs on a
worker, the CLI and tests read the same workspace at once. A query loads only the tables it
was shown into a private in-memory database (`tools/tables/query.py`).

A file that holds no table, or too much, is counted with its reason, never fatal.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from pydantic import BaseModel, Field

from foreman.errors import ToolRefused
from foreman.settings import Settings, get_settings
from foreman.tools.knowledge.bases import workspace_base
from foreman.tools.knowledge.walk import opened_root, read_confined, walk
from foreman.tools.tables.columns import clean_name, split_pairs, typed_column
from foreman.tools.tables.shapes import NotATable, TableData, may_hold_tables, read_tables
from foreman.tools.workspace import Workspace

log = logging.getLogger("foreman.tables")
SHAPES_VERSION = "11"  # bump when shapes/columns read files differently: every file is read again
MAX_TABLE_FILE_BYTES = 20_000_000
SAMPLE_ROWS = 3
FEW_VALUES = 12  # a text column with at most this many distinct values lists them on its card
SOURCE = "_source"
MAX_TERMS = 5000
_WORD = re.compile(r"[^\W_]+")


class ColumnCard(BaseModel):
    name: str
    type: str
    header: str = Field(description="the column as the file names it")
    unit: str | None = None
    values: list[str] | None = Field(default=None, description="every value, when a text column has few")
    shapes: list[str] | None = Field(default=None, description="the forms a text column's many values take, "
                                                               "numbers as <n>, commonest first ('sensor rack-2 <n> ok')")
    span: str | None = Field(default=None, description="a date column's first and last value ('2031-04-01 to "
                                                       "2031-04-30'): a month is a range, not its first day")


class TableCard(BaseModel):
    """What a model is shown of a table, and what retrieval searches."""

    name: str
    path: str
    label: str = ""
    kind: str
    columns: list[ColumnCard]
    rows: int
    sample: list[dict[str, Any]] = Field(default_factory=list)
    dropped: int = 0
    files: list[str] = Field(description="its Parquet file(s), relative to the catalogue's folder")
    parts: list[str] = Field(default_factory=list, description="for a family: the tables it joins")
    part_of: str | None = Field(default=None, description="the family table that holds this one's rows too")
    terms: list[str] = Field(default_factory=list, description="the words its text cells hold (capped)")
    keys: list[str] = Field(default_factory=list, description="its one-word text cells, lower-case (capped): "
                                                                "the names of its rows ('db02', 'pve1')")

    def name_text(self) -> str:
        """What the table is called: its name, file path and label."""
        return f"{self.name} {self.path} {self.label}"

    def column_text(self) -> str:
        return " ".join(f"{c.name} {c.header}" for c in self.columns)


class FileEntry(BaseModel):
    fingerprint: str
    tables: list[str] = Field(default_factory=list)
    skipped: str | None = None


class TableCatalog(BaseModel):
    """Every table of one folder, and why each other candidate file gave none."""

    root: str
    folder: str = Field(description="where the catalogue and its Parquet files live")
    files: dict[str, FileEntry] = Field(default_factory=dict)
    tables: dict[str, TableCard] = Field(default_factory=dict)
    seconds: float = 0.0
    read: list[str] = Field(default_factory=list, description="files (re)read by the last sync")

    @property
    def skipped(self) -> dict[str, str]:
        return {path: entry.skipped for path, entry in self.files.items() if entry.skipped}

    def parquet(self, name: str) -> list[Path]:
        return [Path(self.folder) / file for file in self.tables[name].files]

    def visible(self) -> list[TableCard]:
        """The tables a question may be shown: a family stands for its parts."""
        return [card for card in self.tables.values() if card.part_of is None]

    def summary(self) -> str:
        return (f"{len(self.tables)} table(s) from {sum(bool(e.tables) for e in self.files.values())} file(s); "
                f"{len(self.read)} read this time; {len(self.skipped)} without a table")


def catalog_folder(root: Path, settings: Settings) -> Path:
    return settings.home / "tables" / workspace_base(root)


def sync_tables(folder: Path | str, settings: Settings | None = None) -> TableCatalog:
    """The folder's table catalogue, brought up to date (only changed files are read again)."""
    settings = settings or get_settings()
    started = time.monotonic()
    root = Path(folder).expanduser().resolve()
    home = catalog_folder(root, settings)
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home):
        before = load_catalog(root, settings)
        catalog = TableCatalog(root=str(root), folder=str(home))
        ws = Workspace(root=root, max_read_bytes=MAX_TABLE_FILE_BYTES, allow_hardlinks=settings.file_allow_hardlinks)
        taken: set[str] = set()
        fresh: list[tuple[str, str, list[TableData]]] = []
        with opened_root(ws) as root_fd:
            for rel in walk(ws, root_fd).files:
                if not may_hold_tables(rel):
                    continue
                shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                if shown != rel:  # a name no UTF-8 text can hold: counted, never read or stored
                    catalog.files[shown] = FileEntry(fingerprint="", skipped="its name is not UTF-8; rename it")
                    continue
                entry, tables = _read(ws, root_fd, rel, before)
                if entry is None:
                    continue
                catalog.files[rel] = entry
                if tables is None:  # unchanged: keep its cards and files
                    for name in entry.tables:
                        catalog.tables[name] = before.tables[name].model_copy(update={"part_of": None})
                        taken.add(name)
                elif tables:
                    fresh.append((rel, entry.fingerprint, tables))
        for rel, fingerprint, tables in fresh:
            catalog.read.append(rel)
            entry = catalog.files[rel]
            for table in tables:
                try:
                    card = _write_table(table, home, fingerprint, taken, several=len(tables) > 1)
                except (duckdb.Error, ValueError, OverflowError) as exc:  # one table, never the whole sync
                    entry.skipped = f"could not be stored as a table: {type(exc).__name__}: {str(exc)[:160]}"
                    continue
                if card is None:
                    continue
                catalog.tables[card.name] = card
                entry.tables.append(card.name)
            if not entry.tables:
                entry.skipped = entry.skipped or "no rows"
        _families(catalog, taken)
        catalog.seconds = time.monotonic() - started
        _save(catalog, home)
        _drop_unused(catalog, home)
    log.info("tables: %s", catalog.summary())
    return catalog


def _families(catalog: TableCatalog, taken: set[str]) -> None:
    """Tables of one shape from files named alike but for their digits (`export-2031-04-03.log`,
    `export-2031-04-04.log`, …) become one more table holding all their rows, shown instead of
    them: "how often did the backup fail in November" is one query, not thirty."""
    groups: dict[tuple[str, str, str], list[TableCard]] = {}
    for card in catalog.tables.values():
        path = Path(card.path)
        key = str(path.parent / re.sub(r"\d+", "#", path.name))
        if key == card.path:
            continue
        signature = ",".join(f"{c.name}:{c.type}" for c in card.columns)
        groups.setdefault((key, card.label, signature), []).append(card)
    for (key, label, _), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        members.sort(key=lambda c: c.path)
        stem = re.sub(r"[#_.-]+", " ", Path(key).stem.replace("#", " ")).strip() or "rows"
        name = clean_name(f"{stem} {members[0].kind}s" if members[0].kind == "log" else f"{stem} all", taken, "t")
        first = members[0]
        columns = [c.model_copy() for c in first.columns]
        files = [str(Path(catalog.folder) / f).replace("'", "''") for m in members for f in m.files]
        with duckdb.connect() as db:
            for column in columns:
                if column.type == "VARCHAR":
                    found = db.execute(f'SELECT "{column.name}" FROM read_parquet({files!r})').fetchall()
                    _describe(column, [row[0] for row in found])
                elif column.span:
                    spans = [m_col.span.split(" to ") for m in members for m_col in m.columns
                             if m_col.name == column.name and m_col.span]
                    column.span = f"{min(a for a, _ in spans)} to {max(b for _, b in spans)}"
        catalog.tables[name] = TableCard(
            name=name, path=str(Path(key).parent / Path(key).name.replace("#", "*")), label=label, kind=first.kind,
            columns=columns, rows=sum(m.rows for m in members), sample=first.sample,
            dropped=sum(m.dropped for m in members), files=[f for m in members for f in m.files],
            parts=[m.name for m in members], terms=list(dict.fromkeys(t for m in members for t in m.terms))[:MAX_TERMS],
            keys=list(dict.fromkeys(k for m in members for k in m.keys))[:MAX_TERMS])
        for member in members:
            member.part_of = name


def load_catalog(root: Path | str, settings: Settings | None = None) -> TableCatalog:
    settings = settings or get_settings()
    root = Path(root).expanduser().resolve()
    home = catalog_folder(root, settings)
    path = home / "catalog.json"
    try:
        catalog = TableCatalog.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return TableCatalog(root=str(root), folder=str(home))
    if catalog.root != str(root) or any(not p.is_file() for n in catalog.tables for p in catalog.parquet(n)):
        return TableCatalog(root=str(root), folder=str(home))  # damaged or moved: read everything again
    return catalog


def fingerprint(data: bytes) -> str:
    return f"tables{SHAPES_VERSION}:{hashlib.sha256(data).hexdigest()}"


def _read(ws: Workspace, root_fd: int, rel: str, before: TableCatalog
          ) -> tuple[FileEntry | None, list[TableData] | None]:
    """(entry, tables read) for a changed file; (entry, None) for an unchanged one; (None, None) unreadable."""
    try:
        data, _ = read_confined(ws, root_fd, rel, ws.max_read_bytes)
    except (ToolRefused, OSError):
        return None, None
    if data is None:
        return FileEntry(fingerprint="", skipped=f"larger than {MAX_TABLE_FILE_BYTES} bytes"), []
    digest = fingerprint(data)
    old = before.files.get(rel)
    if old is not None and old.fingerprint == digest and all(n in before.tables for n in old.tables):
        return old, None
    if b"\x00" in data[:8192]:
        return FileEntry(fingerprint=digest, skipped="binary"), []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return FileEntry(fingerprint=digest, skipped="not UTF-8 text"), []
    found = read_tables(rel, text)
    if isinstance(found, NotATable):
        return FileEntry(fingerprint=digest, skipped=found.reason), []
    return FileEntry(fingerprint=digest), found


def _table_name(table: TableData, taken: set[str], several: bool) -> str:
    stem = Path(table.path).stem
    label = table.label.split(".")[-1] if table.label else ""
    if table.kind == "markdown" and not several:
        text = stem
    elif table.kind == "markdown" and label:
        text = f"{stem} {label}"
    elif label and label.lower() != stem.lower():
        text = label if table.kind == "records" and len(label) > 2 else f"{stem} {label}"
    else:
        text = stem
    return clean_name(text, taken, fallback="t")


def _write_table(table: TableData, home: Path, fingerprint: str, taken: set[str],
                 several: bool = False) -> TableCard | None:
    if not table.rows or not table.columns:
        return None
    name = _table_name(table, taken, several)
    names: set[str] = {SOURCE}
    cards: list[ColumnCard] = []
    converted: list[list[Any]] = []
    headers, cells = split_pairs([str(h) for h in table.columns], table.rows)
    for index, header in enumerate(headers):
        column = typed_column([row[index] if index < len(row) else None for row in cells])
        card = ColumnCard(name=clean_name(str(header), names), type=column.sql_type, header=str(header),
                          unit=column.unit)
        if column.sql_type == "VARCHAR":
            _describe(card, column.values)
        elif column.sql_type in ("DATE", "TIMESTAMP") and any(v is not None for v in column.values):
            present = [v for v in column.values if v is not None]
            card.span = f"{min(present).isoformat()} to {max(present).isoformat()}"
        cards.append(card)
        converted.append(column.values)
    file = f"{name}-{fingerprint.rsplit(':', 1)[-1][:16]}.parquet"
    with duckdb.connect() as db:
        columns_sql = ", ".join(f'"{c.name}" {c.type}' for c in cards)
        db.execute(f'CREATE TABLE t ({columns_sql}, "{SOURCE}" VARCHAR)')
        rows = [[values[i] for values in converted] + [f"{table.path}:{table.lines[i]}"] for i in range(len(table.rows))]
        placeholders = ", ".join("?" * (len(cards) + 1))
        for start in range(0, len(rows), 1000):
            db.executemany(f"INSERT INTO t VALUES ({placeholders})", rows[start:start + 1000])
        tmp = home / f".{file}.tmp"
        db.execute(f"COPY t TO '{_sql_path(tmp)}' (FORMAT parquet)")
        os.replace(tmp, home / file)
        sample = db.execute(f"SELECT * EXCLUDE ({SOURCE}) FROM t LIMIT {SAMPLE_ROWS}").fetchall()
    terms: dict[str, None] = {}
    keys: dict[str, None] = {}
    for card, values in zip(cards, converted):
        if card.type == "VARCHAR":
            for value in values:
                if value is not None and len(terms) < MAX_TERMS:
                    terms.update(dict.fromkeys(w for w in _WORD.findall(value.lower()) if len(w) > 1))
                    if len(value) <= 40 and not any(ch.isspace() for ch in value.strip()):
                        keys[value.strip().lower()] = None
    return TableCard(name=name, path=table.path, label=table.label, kind=table.kind, columns=cards,
                     rows=len(table.rows), dropped=table.dropped, files=[file], terms=list(terms)[:MAX_TERMS], keys=list(keys)[:MAX_TERMS],
                     sample=[{c.name: _plain(v) for c, v in zip(cards, row)} for row in sample])


def _describe(card: ColumnCard, values: list[Any]) -> None:
    """A text column's few values, or the forms its many values take, for the model to match."""
    present = [v for v in values if v is not None]
    distinct = sorted(set(present))
    card.values = card.shapes = None
    if len(distinct) <= FEW_VALUES and len(distinct) < len(present) and all(len(v) <= 40 for v in distinct):
        card.values = distinct
    elif len(distinct) > FEW_VALUES or len(distinct) == len(present):
        card.shapes = _shapes(present)


_NUMBER_IN_TEXT = re.compile(r"(?<![\w-])[-+]?\d+(?:[.:,]\d+)*[A-Za-z%]{0,3}(?![\w-])")
MAX_SHAPES = 20


def _shapes(values: list[str]) -> list[str] | None:
    """A column of log messages or notes has many values but few forms: the forms, with counts,
    tell a model what to match ("db-dump failed: timeout"), where three sample rows do not."""
    counts: dict[str, int] = {}
    for value in values:
        shape = _NUMBER_IN_TEXT.sub("<n>", value.strip())[:90]
        counts[shape] = counts.get(shape, 0) + 1
    if len(counts) > MAX_SHAPES * 3 or (len(counts) * 2 > len(values) and len(counts) > MAX_SHAPES):
        return None  # free text: no forms to speak of
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:MAX_SHAPES]
    return [f"{shape} ({n}x)" for shape, n in ranked]


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    return value


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _save(catalog: TableCatalog, home: Path) -> None:
    tmp = home / ".catalog.json.tmp"
    tmp.write_text(catalog.model_dump_json(indent=1))
    os.replace(tmp, home / "catalog.json")


def _drop_unused(catalog: TableCatalog, home: Path) -> None:
    used = {file for card in catalog.tables.values() for file in card.files}
    for file in home.glob("*.parquet"):
        if file.name not in used:
            file.unlink(missing_ok=True)


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    with open(home / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
