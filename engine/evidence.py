"""The passage lines that answer a question, picked and shaped by Python for a small model.

`evidence` scores each line (or YAML list item) of the grounded passages by the rarity-weighted
question words it holds and returns the best few as `path:line: text`: the answer step shows
them to the model (the `lines` prompt style) and under the answer, so a reader can check what
the answer rests on. Shaping matters as much as picking on a 1.5B model (issue #12): a CSV row
is shown as `column: value` pairs, a YAML item as one line with all its keys, a line ending in
":" with the list under it.
"""

from __future__ import annotations

import csv
import math
import re

from pydantic import BaseModel

from foreman.tools.knowledge.search import Passage
from foreman.tools.tables.shapes import mended_row as _mended
from foreman.tools.text import STOP_WORDS, stem, words

PASSAGES_IN_PROMPT = 4  # shown whole; past these only a key row (the row *of* the thing asked) counts




def located(passage: Passage, offset: int) -> str:
    """`path:line` (or `path:pPAGE:line`) of the passage's line at `offset`."""
    number = passage.line_start + offset
    return f"{passage.path}:{number}" if passage.page is None else f"{passage.path}:p{passage.page}:{number}"


def evidence(question: str, passages: list[Passage], n: int = 2) -> list[str]:
    """The `n` passage lines that best support an answer, as 'path:line: text'.

    A line scores the rarity-weighted question words it contains (a word found in few of these
    lines, like "recommend", counts more than one in many, like "report"), plus a little for
    question words in its file name or heading; ties go to the better-ranked passage. A CSV
    row counts its columns' names as its own words ("How much RAM does pve1 have?" -> the
    pve1 row, under `ram_gb`), and is shown with them. Past the first `PASSAGES_IN_PROMPT`
    passages only such a row *of* something the question names (its key cell) is taken: lower
    passages add noise, but the row of pve1 ranks low when other rows mention pve1 more often."""
    wanted = {stem(w) for w in words(question)}
    candidates: list[tuple[int, Passage, int, str, set[str]]] = []
    for rank, passage in enumerate(passages):
        context = {stem(w) for w in words(f"{passage.path} {passage.heading}")}
        for offset, line in _units(passage):
            if rank >= PASSAGES_IN_PROMPT and not _key_row(passage, line, wanted):
                continue
            stems = {stem(w) for w in words(line)} & wanted
            if stems or (context & wanted and line.strip()):
                candidates.append((rank, passage, offset, line.strip(), stems | (context & wanted)))
    if not candidates:
        return []
    frequency = {w: sum(w in c[4] for c in candidates) for w in wanted}
    weight = {w: math.log(1 + len(candidates) / frequency[w]) for w in wanted if frequency[w]}
    scored = []
    for rank, passage, offset, line, stems in candidates:
        table = passage.heading.startswith("columns:")
        in_line = {stem(w) for w in words(f"{line} {passage.heading}" if table else line)} & wanted
        score = sum(weight[w] for w in in_line) + 0.3 * sum(weight[w] for w in stems - in_line)
        if _key_row(passage, line, wanted):
            score += max(weight.values())  # the row *of* pve1 (its key cell), not rows that mention it
        if _is_yaml(passage) and line.startswith("#"):
            score *= 0.5  # in a YAML file the values are in the keys; a comment only says what it holds
        shown = as_record(passage.heading, line) if table else line if _is_yaml(passage) \
            else _with_continuation(passage, offset)
        scored.append((-score, rank, offset, f"{located(passage, offset)}: {shown}"))
    scored.sort()
    return [text for *_, text in scored[:n]]


def _is_yaml(passage: Passage) -> bool:
    return passage.path.lower().endswith((".yaml", ".yml"))


def _units(passage: Passage) -> list[tuple[int, str]]:
    """What evidence scores: each line, except that a YAML list item is one unit with all its keys
    ("- id: 20 / name: iot / subnet: 192.168.20.0/24" -> "id: 20, name: iot, subnet: ..."), since
    the line naming the thing and the line holding the answer are different lines."""
    lines = passage.text.splitlines()
    if not _is_yaml(passage):
        return [(offset, line.strip()) for offset, line in enumerate(lines)]
    units: list[tuple[int, str]] = []
    item: tuple[int, int, list[str]] | None = None  # (offset, indent of the dash, parts)
    for offset, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if item and stripped and not stripped.startswith("- ") and indent > item[1]:
            item[2].append(stripped)
            continue
        if item:
            units.append((item[0], ", ".join(item[2])))
            item = None
        if stripped.startswith("- "):
            item = (offset, indent, [stripped[2:].strip()])
        else:
            units.append((offset, stripped))
    if item:
        units.append((item[0], ", ".join(item[2])))
    return units


def _key_row(passage: Passage, line: str, wanted: set[str]) -> bool:
    """A table row whose first cell is a word of the question: the row about that thing."""
    return passage.heading.startswith("columns:") and stem(line.split(",", 1)[0].strip().lower()) in wanted


def as_record(heading: str, line: str) -> str:
    """A CSV row as "column: value" pairs, so a small model need not count commas to know which
    number is the RAM ("pve1,...,64,..." -> "hostname: pve1, ..., ram_gb: 64"). The header row
    itself, or a row that does not parse, comes back as it was."""
    header = [c.strip() for c in heading.removeprefix("columns:").split(",")]
    try:
        row = _mended(next(csv.reader([line])), len(header))
    except (csv.Error, StopIteration):
        return line
    if len(row) != len(header) or [c.strip() for c in row] == header:
        return line
    return ", ".join(f"{name}: {value.strip()}" for name, value in zip(header, row, strict=True) if value.strip())


def readable(passage: Passage) -> str:
    """A passage as the model is shown it: a table's rows as records, other text as it is."""
    if not passage.heading.startswith("columns:"):
        return passage.text
    return "\n".join(as_record(passage.heading, line) for line in passage.text.splitlines())


LIST_ITEMS_JOINED = 6
_LIST_ITEM = re.compile(r"^(\d+[.)]|[-*+])\s+\S")


def _with_continuation(passage: Passage, offset: int) -> str:
    """The line, and the next one when the sentence it starts goes on there ("... the Backblaze
    B2 bucket" + "`sam-homelab-backups` (region ...)"), or the list a line ending in ":" opens."""
    lines = passage.text.splitlines()
    line = lines[offset].strip()
    if line.endswith(":"):  # "Start in this order, ...:" and the list under it
        items = []
        for after in lines[offset + 1:offset + 1 + LIST_ITEMS_JOINED + 1]:
            item = after.strip()
            if _LIST_ITEM.match(item):
                items.append(item)
            elif item or items:
                break
        if items:
            return " ".join([line, *items])
    following = lines[offset + 1].strip() if offset + 1 < len(lines) else ""
    log_like = (line[:3].isdigit() or line[:3] == following[:3]  # one record per line: never joined
                or passage.heading.startswith("columns:"))
    if following and not log_like and not line.endswith((".", "!", "?", "|", ";")) and not following.startswith(("#", "|")):
        return f"{line} {following}"
    return line


class StatedCount(BaseModel):
    """A count the notes state: where (`path:line`) and in which words ("23 devices")."""

    location: str
    phrase: str


_COUNT_ENDS = re.compile(r"^(are|is|was|were|do|does|did|may|can|could|will|would|should|have|has|had|run|runs|"
                         r"in|on|of|at|for|per|from|with|there|does|kept|left)$", re.IGNORECASE)
_NUMBER = re.compile(r"^\d[\d.,]*$")


def _singular(word: str) -> str:
    return stem(word[:-1] if word.endswith("s") and len(word) > 3 else word)


def stated_count(question: str, passages: list[Passage]) -> StatedCount | None:
    """Where a passage states the count a "how many" question asks for, and the words stating it.

    "How many spare drives does the office keep?" is a lookup when a line says "the office keeps 3
    spare drives"; "How many laptops are in room 4?" needs counting rows. A line states the count
    when a number stands at most two words before the counted noun, and the line also names
    something else the question asks about (the office), so "a 16 GB laptop boots in 9 seconds"
    does not answer "How many laptops run Linux?"."""
    after = re.split(r"\bhow many\b", question, maxsplit=1, flags=re.IGNORECASE)[-1]
    counted: list[str] = []
    for word in re.findall(r"[^\W_]+", after.lower()):
        if _COUNT_ENDS.match(word) or len(counted) == 3:
            break
        if word not in STOP_WORDS:
            counted.append(_singular(word))
    others = {_singular(w) for w in words(question)} - set(counted) - {"how", "many"}
    for passage in passages:
        context = {_singular(w) for w in words(f"{passage.path} {passage.heading}")}
        for offset, line in enumerate(passage.text.splitlines()):
            tokens = list(re.finditer(r"[^\s,;:()]+", line))
            lowered = [t.group(0).lower().strip(".") for t in tokens]
            pairs = [(i, j) for i, word in enumerate(lowered) if _NUMBER.match(word)
                     for j in range(i + 1, min(i + 4, len(tokens))) if _singular(lowered[j]) in counted]
            if not pairs:
                continue
            # from the first number to the last counted noun: "3 drives", "2 red, 5 blue and 1 green cables"
            phrase = line[tokens[pairs[0][0]].start():tokens[max(j for _, j in pairs)].end()].rstrip(".")
            if not others or others & ({_singular(w) for w in words(line)} | context):
                return StatedCount(location=located(passage, offset), phrase=phrase)
    return None


_DURATION = re.compile(r"\b(how long|how many (minutes|hours|mins|hrs)|duration|took|lasted?)\b", re.IGNORECASE)
_CLOCK = re.compile(r"(?<![\d:.,€$£-])([01]?\d|2[0-3])[:h]([0-5]\d)(?::[0-5]\d)?(?![\d:])")


def time_span(question: str, passages: list[Passage]) -> str | None:
    """For a question about how long something took, the span between the two clock times of the
    lines that best match it, computed by Python: "notes/outage.md:5 to :7: from 14:15 to 16:02 is
    1 h 47 min (107 minutes)". Asked to subtract two times itself, the 1.5B said "2 hours".

    The start and end are the two times in the best-matching line that holds two, else the times
    of the two best-matching lines of one file that hold one each, in the file's order."""
    if not _DURATION.search(question):
        return None
    ranked = evidence(question, passages, n=12)
    timed: list[tuple[str, int, list[tuple[int, int]]]] = []
    for text in ranked:
        where, _, line = text.partition(": ")
        path, _, number = where.rpartition(":")
        clocks = [(int(h), int(m)) for h, m in _CLOCK.findall(line)]
        if clocks and number.isdigit():
            timed.append((path, int(number), clocks))
    if not timed:
        return None
    path, first_line, clocks = timed[0]
    marked = _marked_span(question, path, passages)
    if marked is not None:
        (a_line, start), (b_line, end) = marked
        return _span_text(f"{path}:{a_line}" + (f" to :{b_line}" if b_line != a_line else ""), start, end)
    if len(clocks) >= 2:
        start, end, lines = clocks[0], clocks[-1], f"{path}:{first_line}"
    else:
        other = next(((n, c) for p, n, c in timed[1:] if p == path and n != first_line), None)
        if other is None:
            return None
        (a_line, a), (b_line, b) = sorted([(first_line, clocks[0]), (other[0], other[1][0])])
        start, end, lines = a, b, f"{path}:{a_line} to :{b_line}"
    return _span_text(lines, start, end)


def _span_text(lines: str, start: tuple[int, int], end: tuple[int, int]) -> str:
    minutes = (end[0] * 60 + end[1]) - (start[0] * 60 + start[1])
    if minutes < 0:
        minutes += 24 * 60  # past midnight
    hours = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    return (f"{lines}: from {start[0]:02d}:{start[1]:02d} to {end[0]:02d}:{end[1]:02d} is {hours} "
            f"({minutes} minutes, computed by Foreman)")


# words that open or close a span of time in a note's own telling
_STARTS = re.compile(r"\b(start\w*|began|begun|begin\w*|went (down|off|offline|read-only)|first|report\w*|alert\w*|"
                     r"noticed|paged|outage|lost|stopp\w*|broke|fail\w*|arriv\w*|opened)\b", re.IGNORECASE)
_ENDS = re.compile(r"\b(resolv\w*|restor\w*|back (up|online|on)|again|ended|cleared|fixed|closed|recover\w*|"
                   r"finish\w*|until|done|left|came back|reopen\w*|all clear|wrapped up)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\s+[—–]\s+")


def _paragraphs(numbered: dict[int, str]) -> list[list[tuple[int, str]]]:
    """Runs of consecutive non-blank lines, each line with its number."""
    paragraphs: list[list[tuple[int, str]]] = [[]]
    for number in sorted(numbered):
        line = numbered[number].strip()
        if not line or (paragraphs[-1] and number != paragraphs[-1][-1][0] + 1):
            paragraphs.append([])
        if line:
            paragraphs[-1].append((number, line))
    return [p for p in paragraphs if p]


def _timed_clauses(paragraph: list[tuple[int, str]]) -> list[tuple[int, str, tuple[int, int]]]:
    """(line, clause, clock time) for each time in the paragraph's clauses, lines joined first."""
    text, starts = "", []
    for number, line in paragraph:
        starts.append((len(text), number))
        text += line + " "
    found, position = [], 0
    for clause in _SENTENCE_END.split(text):
        where = text.find(clause, position)
        position = where + len(clause)
        line = max(n for offset, n in starts if offset <= max(where, 0))
        found += [(line, clause, (int(h), int(m))) for h, m in _CLOCK.findall(clause)]
    return found


def _marked_span(question: str, path: str, passages: list[Passage]
                 ) -> tuple[tuple[int, tuple[int, int]], tuple[int, tuple[int, int]]] | None:
    """Start and end of a span a note tells in sentences ("… went read-only at 23:40 on the 17th.
    Lena paged me at 23:52. … I called it resolved at 01:15"): each clock time belongs to the
    clause around it; the start is the clause that best matches the question among those with a
    start word, the end likewise among those with an end word. Lines are joined first, since a
    sentence often wraps between its words and its time. None when either is missing."""
    numbered: dict[int, str] = {}
    for passage in passages:
        if passage.path == path and passage.page is None:
            for offset, line in enumerate(passage.text.splitlines()):
                numbered.setdefault(passage.line_start + offset, line)
    if not numbered:
        return None
    wanted = {stem(w) for w in words(question)}
    clauses = [c for paragraph in _paragraphs(numbered) for c in _timed_clauses(paragraph)]
    if len(clauses) < 2:
        return None

    def best(marker: re.Pattern[str], after: int = -1) -> tuple[int, tuple[int, int]] | None:
        scored = [(len({stem(w) for w in words(c)} & wanted), -i, (line, time))
                  for i, (line, c, time) in enumerate(clauses) if i > after and marker.search(c)]
        return max(scored)[2] if scored else None

    start = best(_STARTS)
    if start is None:
        return None
    start_index = next(i for i, (line, _, time) in enumerate(clauses) if (line, time) == start)
    end = best(_ENDS, after=start_index)
    return (start, end) if end is not None else None
