"""Counting rows: the computed step Python can take itself, before any model is asked.

"How many hosts in the inventory are in the basement rack?" needs counting across rows, which
retrieval cannot do and a small model gets wrong (issue #12: a planned run of it took 21 min
on the bundled model and failed). When grounding found a table (a CSV file, or a Markdown
table) and the question names cell values of it ("basement rack", "pve2"), Python reads the
whole table, keeps the rows that hold those values in one column each, and counts them. The
model is then only asked to say it, and the rows counted are shown as the evidence.

Anything less certain (no table, no named value, a value that matches every row) is not
counted here: such a question goes to the planner as before.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from pydantic import BaseModel

from foreman.tools.knowledge.search import Passage

MAX_TABLE_BYTES = 1_000_000
MAX_PHRASE_WORDS = 4
_HOW_MANY = re.compile(r"\b(how many|number of)\b", re.IGNORECASE)
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")
_RULE_LINE = re.compile(r"^\s*\|[\s:|-]+\|\s*$")


class Table(BaseModel):
    path: str
    header: list[str]
    rows: list[list[str]]
    heading: str = ""  # the Markdown heading the table sits under

    def about(self, noun: str) -> bool:
        """Whether the table lists `noun` (singular, lower case): in its file name, heading or columns."""
        names = re.findall(r"[a-z0-9]+", f"{self.path} {self.heading} {' '.join(self.header)}".lower())
        return any(_singular(name) == noun for name in names)


class TableCount(BaseModel):
    """Rows of one table that hold the values a question names, counted by Python."""

    path: str
    where: dict[str, str]  # column -> the value the question named
    rows: list[str]  # each counted row, as its first cells

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def answer(self) -> str:
        """The count as the answer a person reads."""
        where = " and ".join(f'{column} is "{value}"' for column, value in self.where.items())
        return f"{self.count} (counted by Foreman in {self.path}: the rows where {where}: {'; '.join(self.rows)})."

    @property
    def line(self) -> str:
        """The computed fact, as a passage line: what was counted where, and which rows."""
        where = " and ".join(f'{column} is "{value}"' for column, value in self.where.items())
        return (f"{self.path} (counted by Foreman): {self.count} rows where {where}: "
                + "; ".join(self.rows))


def count_rows(question: str, passages: list[Passage], root: Path | None) -> TableCount | None:
    """The row count a "how many" question asks for, from a table grounding found; else None.

    `root`: the folder the passages' paths are relative to (the run's workspace), so the whole
    table is read, not only the lines a passage holds; without it, only the passages' own lines."""
    if not _HOW_MANY.search(question):
        return None
    seen: set[str] = set()
    for passage in passages:
        if passage.path in seen:
            continue
        seen.add(passage.path)
        for table in _tables(passage, root):
            counted = _count(question, table)
            if counted is not None:
                return counted
    return None


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) >= 3 else word


def counted_noun(question: str) -> str | None:
    """What a "how many" question counts, singular: "How many VMs run on pve2?" -> "vm"."""
    found = re.search(r"\b(?:how many|number of)\s+(?:[a-z-]+\s+)??([a-z0-9-]+?)s?\b(?=\s|\?|$)",
                      question.lower())
    return _singular(found.group(1)) if found else None


def _count(question: str, table: Table) -> TableCount | None:
    noun = counted_noun(question)
    if noun is None or not table.about(noun):
        return None  # a table of hosts does not count VMs
    words = re.findall(r"[\w.:/-]+", question.lower())
    phrases = {" ".join(words[i:i + n]) for n in range(MAX_PHRASE_WORDS, 0, -1) for i in range(len(words) - n + 1)}
    where: dict[int, str] = {}
    for column in range(len(table.header)):
        cells = [row[column].strip().lower() for row in table.rows if column < len(row)]
        values = set(cells)
        if len(values) == len(cells):
            continue  # a key column (a name, an id): filtering by it counts one row, not a number
        named = [p for p in phrases if p in values]
        if named:
            where[column] = max(named, key=len)
    # A value inside a longer named one ("rack" in "basement rack") is not a second condition, and
    # a value named in two columns is the condition of the one where it is most often.
    where = {c: v for c, v in where.items() if not any(v != o and v in o for o in where.values())}
    where = {c: v for c, v in where.items()
             if c == max((k for k, o in where.items() if o == v), key=lambda k: _hits(table, k, v))}
    if not where:
        return None
    kept = [row for row in table.rows
            if all(column < len(row) and row[column].strip().lower() == value for column, value in where.items())]
    if not kept or len(kept) == len(table.rows):
        return None  # nothing matched, or no filter at all: not a count this can stand behind
    return TableCount(path=table.path, where={table.header[c]: kept[0][c].strip() for c in where},
                      rows=[" ".join(cell.strip()[:40] for cell in row[:2]) for row in kept])


def _hits(table: Table, column: int, value: str) -> int:
    return sum(column < len(row) and row[column].strip().lower() == value for row in table.rows)


def _tables(passage: Passage, root: Path | None) -> list[Table]:
    text = _whole_file(passage.path, root)
    if passage.path.lower().endswith((".csv", ".tsv")):
        return _csv_table(passage.path, text) if text is not None else []
    lines = (text if text is not None else passage.text).splitlines()
    return _markdown_tables(passage.path, lines)


def _whole_file(path: str, root: Path | None) -> str | None:
    if root is None:
        return None
    base = root.expanduser().resolve()
    file = (base / path).resolve()
    if not file.is_relative_to(base) or not file.is_file() or file.stat().st_size > MAX_TABLE_BYTES:
        return None
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _csv_table(path: str, text: str) -> list[Table]:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    if len(rows) < 3:
        return []
    header = rows[0]
    return [Table(path=path, header=header, rows=[mended_row(row, len(header)) for row in rows[1:]])]


def mended_row(row: list[str], width: int) -> list[str]:
    """A hand-written row with an unquoted comma inside parentheses ("switch (16 ports, managed)")
    has a cell too many: join the cells the parenthesis spans, so the columns line up again."""
    row = list(row)
    i = 0
    while len(row) > width and i < len(row) - 1:
        if row[i].count("(") > row[i].count(")"):
            row[i:i + 2] = [f"{row[i]},{row[i + 1]}"]
        else:
            i += 1
    return row


def _markdown_tables(path: str, lines: list[str]) -> list[Table]:
    tables, block, heading = [], [], ""
    for line in [*lines, ""]:
        if _TABLE_LINE.match(line):
            block.append(line)
            continue
        if len(block) >= 3 and _RULE_LINE.match(block[1]):
            cells = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in block]
            tables.append(Table(path=path, header=cells[0], rows=cells[2:], heading=heading))
        block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables
