"""Which files hold tables, and the rows they hold: pure Python, no database.

A person's folder keeps tables in many shapes; each becomes one or more `TableData`, every row
keeping the `path:line` it came from, so a query's rows can be shown as evidence:

- CSV/TSV (delimiter sniffed): the first row names the columns. A row with more cells than the
  header is mended when an unquoted comma sits inside parentheses, else dropped and counted.
- YAML/JSON: a list of records; a mapping holding such lists (one table per list); a mapping of
  records (`hosts: {pve1: {ram: 64}}`, the key becomes a `name` column). Nested records are
  flattened one level (`owner.email` -> `owner_email`), lists of scalars joined with ", ".
- Markdown tables in .md/.txt files, one table each, named after the file and the heading above.
- Log files (`*.log`, or text whose lines mostly open with a timestamp): one row per line with
  `ts`, `day`, `level` and `message`, plus any `key=value` the lines repeat.

Prose is not a table: it stays with the knowledge index (lookups). Anything else returns
`NotATable` with the reason the person is told.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel, Field

from foreman.safe_yaml import YamlRefused, check_yaml

MAX_ROWS = 100_000  # rows per table; a bigger one is cut, and the card says so
MAX_COLUMNS = 64
_TABLE_SUFFIXES = (".csv", ".tsv", ".yaml", ".yml", ".json", ".md", ".markdown", ".txt", ".log")


class TableData(BaseModel):
    """One table as read from a file: column names as written, rows of Python values."""

    path: str
    label: str = Field(default="", description="what part of the file: a YAML key, a Markdown heading")
    kind: str = Field(description="csv, records, markdown or log")
    columns: list[str]
    rows: list[list[Any]]
    lines: list[int] = Field(description="the 1-based line each row starts on")
    dropped: int = Field(default=0, description="rows left out (malformed, or past MAX_ROWS)")


class NotATable(BaseModel):
    """Why a file gave no table: shown to the person, counted by the sync."""

    path: str
    reason: str


def may_hold_tables(path: str) -> bool:
    return path.lower().endswith(_TABLE_SUFFIXES)


def read_tables(path: str, text: str) -> list[TableData] | NotATable:
    """The tables `text` (the file at `path`) holds, or why it holds none."""
    lower = path.lower()
    try:
        if lower.endswith((".csv", ".tsv")):
            return _csv(path, text)
        if lower.endswith((".yaml", ".yml", ".json")):
            return _records_file(path, text)
        if lower.endswith(".log") or _mostly_log_lines(text):
            return _log(path, text)
        if lower.endswith((".md", ".markdown", ".txt")):
            found = _markdown_tables(path, text)
            return found or NotATable(path=path, reason="no table in it")
    except (csv.Error, yaml.YAMLError, json.JSONDecodeError, RecursionError, YamlRefused) as exc:
        return NotATable(path=path, reason=f"malformed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    return NotATable(path=path, reason="not a table-shaped file")


# ---------------------------------------------------------------- CSV


def _csv(path: str, text: str) -> list[TableData] | NotATable:
    sample = text[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters="\t,;|" if path.lower().endswith(".tsv") else ",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if path.lower().endswith(".tsv") else csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header: list[str] | None = None
    rows: list[list[Any]] = []
    lines: list[int] = []
    dropped = 0
    start = 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row) or (header is None and row[0].lstrip().startswith("#")):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            continue
        if len(row) > len(header):
            row = mended_row(row, len(header))
        if len(row) > len(header) and not any(cell.strip() for cell in row[len(header):]):
            row = row[:len(header)]
        if len(row) > len(header):
            dropped += 1
            continue
        if len(rows) >= MAX_ROWS:
            dropped += 1
            continue
        rows.append([cell.strip() for cell in row] + [""] * (len(header) - len(row)))
        lines.append(line)
    if header is None or not rows:
        return NotATable(path=path, reason="no rows under the header")
    if dropped > len(rows):
        return NotATable(path=path, reason=f"malformed: {dropped} rows do not fit the header's {len(header)} columns")
    return [TableData(path=path, kind="csv", columns=header, rows=rows, lines=lines, dropped=dropped)]


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


# ---------------------------------------------------------------- YAML / JSON records


def _records_file(path: str, text: str) -> list[TableData] | NotATable:
    # YAML's composer keeps each node's line; JSON is YAML for this purpose, except where it is not
    check_yaml(text)  # too deep, or an alias bomb: refused before a node is built
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        if not path.lower().endswith(".json"):
            raise
        node = None
    if node is None:
        if path.lower().endswith(".json"):
            return _records_without_lines(path, json.loads(text))
        return NotATable(path=path, reason="empty")
    tables = [t for t in _tables_in(path, node, "") if t.rows]
    return tables or NotATable(path=path, reason="no list of records in it")


def _tables_in(path: str, node: yaml.Node, label: str, depth: int = 0) -> Iterable[TableData]:
    if depth > 3:
        return
    if isinstance(node, yaml.SequenceNode):
        records = [item for item in node.value if isinstance(item, yaml.MappingNode)]
        if records and len(records) * 2 >= len(node.value):
            yield _records_table(path, label, [(r, None) for r in records])
        return
    if not isinstance(node, yaml.MappingNode):
        return
    pairs = [(key, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)]
    # a mapping of records: every value a mapping of scalars (`hosts: {pve1: {...}, pve2: {...}}`)
    if len(pairs) >= 2 and all(isinstance(v, yaml.MappingNode) and _scalar_mapping(v) for _, v in pairs):
        yield _records_table(path, label, [(v, k.value) for k, v in pairs])
        return
    for key, value in pairs:
        yield from _tables_in(path, value, f"{label}.{key.value}" if label else str(key.value), depth + 1)


def _scalar_mapping(node: yaml.MappingNode) -> bool:
    return all(isinstance(v, yaml.ScalarNode) for _, v in node.value)


def _records_table(path: str, label: str, records: list[tuple[yaml.MappingNode, str | None]]) -> TableData:
    columns: dict[str, None] = {}
    flat: list[dict[str, Any]] = []
    for node, name in records[:MAX_ROWS]:
        value = _construct(node)
        row = {"name": name} if name is not None else {}
        row.update(_flatten(value))
        flat.append(row)
        columns.update(dict.fromkeys(row))
    names = list(columns)[:MAX_COLUMNS]
    return TableData(path=path, label=label, kind="records", columns=names,
                     rows=[[row.get(c) for c in names] for row in flat],
                     lines=[node.start_mark.line + 1 for node, _ in records[:MAX_ROWS]],
                     dropped=max(0, len(records) - MAX_ROWS))


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads an unquoted 14:05 as the number 845 (base 60); a person meant a time."""

    def construct_yaml_int(self, node: yaml.Node) -> Any:
        return str(node.value) if ":" in str(node.value) else super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.Node) -> Any:
        return str(node.value) if ":" in str(node.value) else super().construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def _construct(node: yaml.Node) -> Any:
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _flatten(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(record, dict):
        return out
    for key, value in record.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                out[f"{key}.{inner}"] = _cell(v)
        else:
            out[str(key)] = _cell(value)
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(str(_cell(v)) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)[:500]
    return value


def _records_without_lines(path: str, data: Any) -> list[TableData] | NotATable:
    lists = [("", data)] if isinstance(data, list) else \
        [(str(k), v) for k, v in data.items() if isinstance(v, list)] if isinstance(data, dict) else []
    tables = []
    for label, items in lists:
        records = [_flatten(item) for item in items if isinstance(item, dict)][:MAX_ROWS]
        if not records:
            continue
        names = list(dict.fromkeys(k for r in records for k in r))[:MAX_COLUMNS]
        tables.append(TableData(path=path, label=label, kind="records", columns=names,
                                rows=[[r.get(c) for c in names] for r in records], lines=[1] * len(records)))
    return tables or NotATable(path=path, reason="no list of records in it")


# ---------------------------------------------------------------- Markdown tables

_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")
_RULE_LINE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _markdown_tables(path: str, text: str) -> list[TableData]:
    tables: list[TableData] = []
    block: list[tuple[int, str]] = []
    heading = ""
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if _TABLE_LINE.match(line):
            block.append((number, line))
            continue
        if len(block) >= 3 and _RULE_LINE.match(block[1][1]):
            cells = [[cell.strip() for cell in row.strip().strip("|").split("|")] for _, row in block]
            width = len(cells[0])
            body = [(n, row) for (n, _), row in zip(block[2:], cells[2:]) if len(row) == width]
            tables.append(TableData(path=path, label=heading, kind="markdown", columns=cells[0],
                                    rows=[[_unmark(c) for c in row] for _, row in body], lines=[n for n, _ in body],
                                    dropped=len(cells) - 2 - len(body)))
        block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def _unmark(cell: str) -> str:
    return re.sub(r"(\*\*|__|`)(.*?)\1", r"\2", cell).strip()


# ---------------------------------------------------------------- logs

_STAMP = re.compile(
    r"^\[?(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)\]?\s*"
    r"(?:[\[(]?(?P<level>TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|ALERT|EMERG)[\])]?:?\s+)?"
    r"(?P<message>.*)$", re.IGNORECASE)
_KEY_VALUE = re.compile(r"\b([A-Za-z][\w.-]{0,30})=(\"[^\"]*\"|'[^']*'|[^\s,;]+)")


_COMPONENT = re.compile(r"^(?:\[([\w.@-]+)\]|([A-Za-z][\w.-]*?)(?:\[\d+\])?:?)\s")


def _components(parsed: list[tuple[int, dict[str, Any]]]) -> bool:
    """Give each row a `component` (the program or job a message opens with: `db-dump`,
    `sshd[42]:`, `backup`) when most messages open with one of a few names: a model then
    filters on a value it is shown instead of guessing words inside the message."""
    found = [_COMPONENT.match(row["message"]) for _, row in parsed]
    names = {m.group(1) or m.group(2) for m in found if m}
    if sum(m is not None for m in found) * 10 < len(parsed) * 8 or not 0 < len(names) <= max(12, len(parsed) // 20):
        return False
    for (_, row), match in zip(parsed, found):
        row["component"] = (match.group(1) or match.group(2)) if match else None
    return True


_DETAIL = re.compile(r"^(?:\[[\w.@-]+\]|[A-Za-z][\w.-]*?(?:\[\d+\])?:?)\s+([A-Za-z][\w.-]*)")
MAX_DETAILS = 16


def _details(parsed: list[tuple[int, dict[str, Any]]]) -> bool:
    """After the component, many logs name what it acted on or how it went: `export nas2 failed`,
    `sensor rack-2 31C ok`, `db-dump failed: timeout`. When that word takes few values, it
    is a `detail` column too, shown with its values, so "the nas2 export" or "failed exports" is a
    filter on values the model can see."""
    found = [_DETAIL.match(row["message"]) for _, row in parsed]
    values = {m.group(1).rstrip(".:") for m in found if m}
    if sum(m is not None for m in found) * 10 < len(parsed) * 8 or not 1 < len(values) <= MAX_DETAILS:
        return False
    for (_, row), match in zip(parsed, found):
        row["detail"] = match.group(1).rstrip(".:") if match else None
    return True


_STATUS = re.compile(r"^[\[(]?([A-Z]{2,9})[\])]?:?\s+(.*)$", re.DOTALL)
MAX_STATUS_WORDS = 8
_KNOWN_STATUS = {"OK", "FAIL", "FAILED", "FAILURE", "SUCCESS", "SUCCEEDED", "PASS", "PASSED", "DONE", "SKIP", "SKIPPED",
                 "ABORT", "ABORTED", "TIMEOUT", "RETRY", "START", "STARTED", "STOP", "STOPPED", "UP", "DOWN"}


def _status_words(parsed: list[tuple[int, dict[str, Any]]]) -> None:
    """Many logs put their own status word where a level goes: `OK`, `FAILED`, `SKIPPED`. A
    capitalised word right after the stamp of a line with no known level is its level when the
    file has few such words, each a common status word or on two lines at least (not a one-off
    acronym opening a message)."""
    found = {i: _STATUS.match(row["message"]) for i, (_, row) in enumerate(parsed) if row["level"] is None}
    counts: dict[str, int] = {}
    for match in found.values():
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    words = {w for w, n in counts.items() if n >= 2 or w in _KNOWN_STATUS}
    if not words or len(counts) > MAX_STATUS_WORDS:
        return
    for i, match in found.items():
        if match and match.group(1) in words:
            parsed[i][1]["level"] = match.group(1)
            parsed[i][1]["message"] = match.group(2).strip()


def _mostly_log_lines(text: str) -> bool:
    lines = [line for line in text.splitlines()[:200] if line.strip()]
    stamped = sum(bool(_STAMP.match(line) or _SYSLOG.match(line)) for line in lines)
    return len(lines) >= 3 and stamped * 10 >= len(lines) * 8


_SYSLOG = re.compile(
    r"^(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+(?P<day>\d{1,2})\s+(?P<hms>\d{2}:\d{2}:\d{2})\s+"
    r"(?P<host>\S+)\s+(?P<message>.*)$")
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _syslog_stamp(line: str, year: int) -> re.Match[str] | None:
    """A classic syslog line ("Nov 19 14:02:11 fw01 kernel: …") as an ISO stamp; the year, which
    syslog leaves out, comes from the file's name or today."""
    found = _SYSLOG.match(line)
    if not found:
        return None
    month = _MONTHS.index(found.group("mon")) + 1
    iso = f"{year:04d}-{month:02d}-{int(found.group('day')):02d} {found.group('hms')} {found.group('message')}"
    return _STAMP.match(iso)


def _log(path: str, text: str) -> list[TableData] | NotATable:
    import datetime as _dt

    year_in_name = re.search(r"(?<!\d)(20\d{2})(?!\d)", path)
    year = int(year_in_name.group(1)) if year_in_name else _dt.date.today().year
    parsed: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        found = _STAMP.match(line.strip()) or _syslog_stamp(line.strip(), year)
        if not found:
            if parsed and line.strip():  # a continuation line (a traceback): part of the entry above
                parsed[-1][1]["message"] += "\n" + line.rstrip()
            continue
        ts = found.group("ts").replace(",", ".")
        row: dict[str, Any] = {"ts": ts, "day": ts[:10], "level": (found.group("level") or "").upper() or None,
                               "message": found.group("message").strip()}
        row.update({f"kv_{k}": v.strip("\"'") for k, v in _KEY_VALUE.findall(row["message"])})
        parsed.append((number, row))
        if len(parsed) >= MAX_ROWS:
            break
    if not parsed:
        return NotATable(path=path, reason="no timestamped lines")
    _status_words(parsed)
    # keep the key=value columns at least a fifth of the lines carry
    counts: dict[str, int] = {}
    for _, row in parsed:
        for key in row:
            counts[key] = counts.get(key, 0) + 1
    extra = [k for k, n in counts.items() if k.startswith("kv_") and n * 5 >= len(parsed)][:MAX_COLUMNS - 5]
    split = ["component", *(["detail"] if _details(parsed) else [])] if _components(parsed) else []
    names = ["ts", "day", "level", *split, "message", *extra]
    if all(row["level"] is None for _, row in parsed):
        names.remove("level")
    return [TableData(path=path, kind="log", columns=[n.removeprefix("kv_") for n in names],
                      rows=[[row.get(n) for n in names] for _, row in parsed], lines=[n for n, _ in parsed])]
