"""The workspace's tables as files code can read: CSV in one folder, and a typed loader beside them.

`run_python` mounts this folder read-only at /tables (`tools/code.py: data_binds`); a script then
does `from foreman_tables import load` and gets rows with int, float and date values instead of
parsing text by hand, which a small model gets wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from foreman.tools.tables.store import SOURCE, TableCatalog, _sql_path


def export_csv(catalog: TableCatalog) -> Path:
    """Every visible table as `<name>.csv` (header row, no `_source`) in one folder under the
    catalogue, for code to read with the standard library; rewritten only when a table changed."""
    folder = Path(catalog.folder) / "csv"
    folder.mkdir(exist_ok=True)
    wanted = {f"{card.name}.csv": card for card in catalog.visible()}
    for stale in folder.glob("*.csv"):
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    with duckdb.connect() as db:
        for file, card in wanted.items():
            target = folder / file
            stamp = max(catalog.parquet(card.name), key=lambda p: p.stat().st_mtime).stat().st_mtime
            if target.is_file() and target.stat().st_mtime >= stamp:
                continue
            paths = ", ".join("'" + str(p).replace("'", "''") + "'" for p in catalog.parquet(card.name))
            tmp = folder / f".{file}.tmp"
            db.execute(f"COPY (SELECT * EXCLUDE ({SOURCE}) FROM read_parquet([{paths}], union_by_name = true)) "
                       f"TO '{_sql_path(tmp)}' (HEADER, DELIMITER ',')")
            os.replace(tmp, target)
    types = {card.name: {c.name: c.type for c in card.columns} for card in wanted.values()}
    loader = _LOADER.replace("TYPES = {}", f"TYPES = {types!r}")
    if not (folder / LOADER).is_file() or (folder / LOADER).read_text() != loader:
        (folder / LOADER).write_text(loader)
    return folder


LOADER = "foreman_tables.py"
_LOADER = '''"""The workspace's tables with typed values, for code in the sandbox (written by Foreman).

    import sys; sys.path.insert(0, "/tables")
    from foreman_tables import load
    rows = load("servers")   # a list of dicts: int, float, datetime.date/datetime/time, bool, str; None if empty
"""
import csv
import datetime
import os

TYPES = {}
_HERE = os.path.dirname(os.path.abspath(__file__))


def _typed(kind, text):
    if text == "":
        return None
    if kind == "BIGINT":
        return int(text)
    if kind == "DOUBLE":
        return float(text)
    if kind == "DATE":
        return datetime.date.fromisoformat(text)
    if kind == "TIMESTAMP":
        return datetime.datetime.fromisoformat(text)
    if kind == "TIME":
        return datetime.time.fromisoformat(text)
    if kind == "BOOLEAN":
        return text.lower() == "true"
    return text


def load(name):
    """The rows of table `name`, each a dict of column -> typed value."""
    if name not in TYPES:
        raise KeyError(f"no table {name!r}; the tables are: {', '.join(sorted(TYPES))}")
    types = TYPES[name]
    with open(os.path.join(_HERE, name + ".csv"), newline="", encoding="utf-8") as handle:
        return [{k: _typed(types.get(k, "VARCHAR"), v) for k, v in row.items()} for row in csv.DictReader(handle)]
'''
