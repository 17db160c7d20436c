"""Clean names and typed values: what turns a file's cells into columns a query can use.

A small model writes `SUM(monthly_cost)` right when `monthly_cost` is a number; given the text
"€12.50" it cannot. So Python decides each column's type from all its cells: a column is a
number, a date, a timestamp, a time or a boolean only when every non-empty cell reads as one
(currency signs, thousands separators and a trailing % are taken off, and the unit is kept for
the schema card), else it stays text as written. Names become snake_case that the SQL parser
reads as plain identifiers: no keywords, no leading digit, no duplicates.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

import sqlglot
from sqlglot import exp

_CURRENCY = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "eur": "EUR", "usd": "USD", "gbp": "GBP", "chf": "CHF"}
_NUMBER = re.compile(
    r"^(?P<pre>[€$£¥]|(?:EUR|USD|GBP|CHF)\s?)?\s*(?P<num>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*"
    r"(?P<post>%|[€$£¥]|\s?(?:EUR|USD|GBP|CHF|eur|usd|gbp|chf))?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_TIME = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")
_TRUE, _FALSE = {"true", "yes", "y"}, {"false", "no", "n"}


class Column:
    """One column's SQL type, its values converted, and the unit its cells carried (EUR, %)."""

    def __init__(self, sql_type: str, values: list[Any], unit: str | None = None) -> None:
        self.sql_type, self.values, self.unit = sql_type, values, unit


def typed_column(cells: list[Any]) -> Column:
    """The narrowest type every non-empty cell fits, with the cells converted to it."""
    present = [c for c in cells if c is not None and str(c).strip() != ""]
    if not present:
        return Column("VARCHAR", [None] * len(cells))
    for attempt in (_as_bool, _as_number, _as_timestamp, _as_date, _as_time):
        column = attempt(present)
        if column is not None:
            converted = iter(column.values)
            column.values = [next(converted) if c is not None and str(c).strip() != "" else None for c in cells]
            return column
    return Column("VARCHAR", [None if c is None or str(c).strip() == "" else _text(c) for c in cells])


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime, dt.time)) else str(value)


def _as_bool(cells: list[Any]) -> Column | None:
    if all(isinstance(c, bool) for c in cells):
        return Column("BOOLEAN", list(cells))
    if all(isinstance(c, str) and c.strip().lower() in _TRUE | _FALSE for c in cells) and \
            any(c.strip().lower() in {"true", "false"} for c in cells):
        return Column("BOOLEAN", [c.strip().lower() in _TRUE for c in cells])
    return None


def _as_number(cells: list[Any]) -> Column | None:
    values: list[float | int] = []
    units: set[str] = set()
    for cell in cells:
        if isinstance(cell, bool):
            return None
        if isinstance(cell, (int, float)):
            values.append(cell)
            continue
        found = _NUMBER.match(str(cell).strip())
        if not found:
            return None
        unit = (found.group("pre") or found.group("post") or "").strip()
        if unit:
            units.add(_CURRENCY.get(unit.lower(), _CURRENCY.get(unit, unit)))
        number = found.group("num").replace(",", "")
        values.append(float(number) if "." in number else int(number))
    if len(units) > 1:
        return None  # EUR and USD in one column: adding them up would be wrong, so it stays text
    integral = all(isinstance(v, int) for v in values)
    return Column("BIGINT" if integral else "DOUBLE", values, next(iter(units), None))


def _as_date(cells: list[Any]) -> Column | None:
    if all(isinstance(c, dt.date) and not isinstance(c, dt.datetime) for c in cells):
        return Column("DATE", list(cells))
    if all(isinstance(c, str) and _DATE.match(c.strip()) for c in cells):
        try:
            return Column("DATE", [dt.date.fromisoformat(c.strip()) for c in cells])
        except ValueError:
            return None
    return None


def _as_timestamp(cells: list[Any]) -> Column | None:
    if all(isinstance(c, dt.datetime) for c in cells):
        return Column("TIMESTAMP", [c.replace(tzinfo=None) for c in cells])
    if all(isinstance(c, str) and _TIMESTAMP.match(c.strip()) for c in cells):
        try:
            return Column("TIMESTAMP", [dt.datetime.fromisoformat(c.strip().replace("Z", "+00:00")).replace(tzinfo=None)
                                        for c in cells])
        except ValueError:
            return None
    return None


def _as_time(cells: list[Any]) -> Column | None:
    if all(isinstance(c, str) and _TIME.match(c.strip()) for c in cells):
        try:
            return Column("TIME", [dt.time.fromisoformat(c.strip().zfill(5) if len(c.strip()) == 4 else c.strip())
                                   for c in cells])
        except ValueError:
            return None
    if all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 86400 for c in cells):
        return None  # YAML reads 14:05 as 845 (sexagesimal): indistinguishable from a number; left as number
    return None


_PAIR = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*/\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z%€$£]{0,4})\s*$")
_UNIT_WORDS = {"gb", "mb", "tb", "kb", "gib", "mib", "tib", "eur", "usd", "gbp", "kg", "g", "l", "h", "min", "s",
               "ms", "w", "kw", "kwh", "pct", "percent", "cores", "hours", "minutes", "days"}


def split_pairs(headers: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """A column whose header is "A/B" and whose every cell is two numbers "a/b" ("disk used/total
    GB": "3710/4000") becomes the numbers A and B, and, when a never exceeds b, `A_pct` (100·a/b):
    no SQL a small model writes splits "3710/4000", and "more than 85% full" is then a filter."""
    out_headers: list[str] = []
    columns: list[list[Any]] = []
    for index, header in enumerate(headers):
        cells = [row[index] if index < len(row) else None for row in rows]
        pairs = [_PAIR.match(str(c)) if c is not None and str(c).strip() else None for c in cells]
        present = [c for c in cells if c is not None and str(c).strip()]
        if "/" not in str(header) or not present or sum(p is not None for p in pairs) < len(present):
            out_headers.append(header)
            columns.append(cells)
            continue
        first, second = _pair_names(str(header))
        a = [_num(p.group(1)) if p else None for p in pairs]
        b = [_num(p.group(2)) if p else None for p in pairs]
        out_headers += [first, second]
        columns += [a, b]
        if all(x is None or (y and 0 <= x <= y) for x, y in zip(a, b)):
            out_headers.append(f"{first.removesuffix('_' + first.rsplit('_', 1)[-1]) if _unit(first) else first}_pct")
            columns.append([None if x is None or not y else round(100 * x / y, 2) for x, y in zip(a, b)])
    return out_headers, [list(row) for row in zip(*columns)] if columns else rows


def _num(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _unit(name: str) -> bool:
    return "_" in name and name.rsplit("_", 1)[-1] in _UNIT_WORDS


def _pair_names(header: str) -> tuple[str, str]:
    """ "disk_used/total_gb" -> disk_used_gb, disk_total_gb: each half gets the words only the other has
    at the front (the thing measured) and the back (the unit)."""
    left, _, right = header.partition("/")
    a, b = snake(left).split("_"), snake(right).split("_")
    if len(a) > 1 and a[0] not in b:
        b = [*a[:-1], *b] if len(b) == 1 or b[-1] in _UNIT_WORDS and len(b) == 2 else [a[0], *b]
    if len(b) > 1 and b[-1] in _UNIT_WORDS and a[-1] != b[-1]:
        a = [*a, b[-1]]
    return "_".join(a), "_".join(b)


def snake(text: str) -> str:
    """`Monthly Cost (€)` -> `monthly_cost`; `owner.email` -> `owner_email`."""
    text = re.sub(r"\(.*?\)", " ", str(text))
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    return text or "column"


@functools.cache
def _reserved() -> frozenset[str]:
    import duckdb

    with duckdb.connect() as db:
        return frozenset(r[0] for r in db.sql(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'").fetchall())


@functools.lru_cache(maxsize=4096)
def plain_identifier(name: str) -> bool:
    """Both SQL parsers (sqlglot's, which checks queries, and DuckDB's, which runs them) read
    `name` as an ordinary column, unquoted: not a keyword, not a function."""
    if name.lower() in _reserved():
        return False
    try:
        parsed = sqlglot.parse_one(f"SELECT {name} FROM t", read="duckdb")
    except sqlglot.errors.ParseError:
        return False
    projection = parsed.expressions[0] if isinstance(parsed, exp.Select) and parsed.expressions else None
    return isinstance(projection, exp.Column) and projection.name == name and not projection.table


def clean_name(text: str, taken: set[str], fallback: str = "column") -> str:
    """A snake_case name, unique in `taken` (which it joins), that needs no quotes in SQL."""
    name = snake(text) if text else fallback
    if name[0].isdigit():
        name = f"{fallback[:1] or 'c'}_{name}"
    if not plain_identifier(name):
        name = f"{name}_"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name
