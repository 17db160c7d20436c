"""The fast path: a question one step can answer gets one grounded model call, not a plan.

Measured in issue #12: BM25 top-4 passages plus one direct chat call answered 7/12 (0.5B)
and 11/12 (1.5B) where the planner answered 0/12, in 3.7-8.4 s instead of 93 s. So:
`route` decides (pure Python, no model call) whether an objective is such a question, and
`answer_from_passages` makes the one call: the passages with their sources, the question,
and the rule to answer only from them. Objectives that ask for actions, or for counting,
totals, comparisons or date arithmetic, go to the planner, which can give them a computed
step; retrieval alone cannot count across files.

The answer keeps the model's words apart from `evidence`: the passage lines Python picks
as the best support (most question words), so a reader can check the answer, and a
benchmark can tell the model's correctness from the retrieval's.
"""

from __future__ import annotations

import csv
import math
import re
import time
from typing import Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from foreman.agents.models import uses_embedded_model
from foreman.engine.grounding import Grounding
from foreman.engine.plan import Plan, SubTask
from foreman.engine.records import NodeOutcome, NodeStatus, RunReport, RunStatus, Usage
from foreman.engine.tables import mended_row as _mended
from foreman.settings import Settings
from foreman.tools.knowledge.search import Passage
from foreman.tools.knowledge.store import STOP_WORDS

PASSAGES_IN_PROMPT = 4
LINES_IN_PROMPT = 3
ANSWER_MAX_TOKENS = 120  # one or two sentences; a small model that loops is cut early
ANSWER_TEMPERATURE = 0.0
Style = Literal["passages", "lines", "adaptive"]
PASSAGE_CHARS = 700
NOT_FOUND = "The notes do not say."

SYSTEM = (
    "You answer questions about the user's own notes. Use only the notes given. "
    "Copy names, numbers, dates and times exactly as the notes write them. "
    f"Answer in one or two sentences. If the notes do not contain the answer, reply: {NOT_FOUND}"
)
# The same without the way out: asked so, the 1.5B answered "pve1 has 64 GB of RAM." and "port
# 8000" where the rule above made it refuse (issue #12); Python then checks the answer (`supported`).
SYSTEM_ANSWER = (
    "You answer questions about the user's own notes. Use only the notes given. "
    "Copy names, numbers, dates and times exactly as the notes write them. Answer in one or two sentences."
)

_QUESTION_START = re.compile(
    r"^(what|which|when|where|who|whom|whose|why|how|is|are|was|were|do|does|did|can|could|should|has|have|"
    r"will|would|tell me|list|name|give me|show me|explain|describe|summari[sz]e)\b", re.IGNORECASE)
_ACTION = re.compile(
    r"\b(write|create|save|delete|remove|rename|send|e-?mail|notify|post|upload|fetch|download|run|execute|"
    r"install|deploy|restart|schedule|edit|update|fix|draft|publish)\b", re.IGNORECASE)
_REQUEST = re.compile(r"^(please\b|(can|could|would|will) you\b)", re.IGNORECASE)
_COMPUTED = re.compile(
    r"\b(how many|count|(?<!serial )(?<!phone )(?<!model )(?<!version )(?<!part )(?<!port )number of|total|sum|average|mean|median|percent(age)?|compare|comparison|more than|"
    r"less than|fewer|most|least|largest|smallest|oldest|newest|longest|shortest|difference|days? (until|since|"
    r"between|left)|how long ago|how old|per (host|month|day|week)|each|every one|all the)\b", re.IGNORECASE)


class Route(BaseModel):
    """What the objective needs: one grounded answer, or a plan (with why)."""

    kind: Literal["answer", "plan"]
    reason: str


def route(objective: str, grounding: Grounding) -> Route:
    """Whether one grounded call can answer `objective`. Cheap, deterministic, explainable.

    A question is answered from the passages unless it needs computing (counts, totals,
    comparisons, date arithmetic) or holds several questions; an action word counts only in
    a request ("Write ...", "Can you send ..."), not inside a question ("Which file failed to
    upload?")."""
    text = " ".join(objective.split())
    if not grounding.passages:
        return Route(kind="plan", reason="no passages found: the steps must look for themselves")
    computed = _COMPUTED.search(text)
    only_how_many = computed is not None and computed.group(0).lower() == "how many" \
        and len(_COMPUTED.findall(text)) == 1
    if only_how_many and grounding.count is not None:
        return Route(kind="answer", reason=f"a count Python computed: {grounding.count.count} rows of "
                                           f"{grounding.count.path} (engine/tables.py)")
    stated = stated_count(text, grounding.passages) if only_how_many else None
    if computed and not stated:
        return Route(kind="plan", reason=f"needs a computed step ({computed.group(0)!r})")
    action = _ACTION.search(text)
    request = _REQUEST.match(text)
    if request and action:
        return Route(kind="plan", reason=f"asks for an action ({action.group(0)!r})")
    if text.endswith("?") or _QUESTION_START.match(text):
        if text.count("?") > 1 or re.search(r"\?\s*\S", text):
            return Route(kind="plan", reason="several questions: several steps")
        if stated:
            return Route(kind="answer",
                         reason=f"a question the passages may answer in one step: the count is stated ({stated})")
        return Route(kind="answer", reason="a question the passages may answer in one step")
    if action:
        return Route(kind="plan", reason=f"asks for an action ({action.group(0)!r})")
    return Route(kind="plan", reason="not a question")


_COUNT_ENDS = re.compile(r"^(are|is|was|were|do|does|did|may|can|could|will|would|should|have|has|had|run|runs|"
                         r"in|on|of|at|for|per|from|with|there|does|kept|left)$", re.IGNORECASE)
_NUMBER = re.compile(r"^\d[\d.,]*$")


def _singular(word: str) -> str:
    return _stem(word[:-1] if word.endswith("s") and len(word) > 3 else word)


def stated_count(question: str, passages: list[Passage]) -> str | None:
    """Where a passage states the count a "how many" question asks for, as `path:line`, or None.

    "How many reallocated sectors does disk sdc have?" is a lookup when a line says "sdc ... 8
    reallocated sectors"; "How many hosts are in the basement rack?" needs counting rows. A line
    states the count when a number stands at most two words before the counted noun, and the line
    also names something else the question asks about (sdc), so "A 32 GB VM takes 20 minutes"
    does not answer "How many VMs run on pve2?"."""
    after = re.split(r"\bhow many\b", question, maxsplit=1, flags=re.IGNORECASE)[-1]
    counted: list[str] = []
    for word in re.findall(r"[^\W_]+", after.lower()):
        if _COUNT_ENDS.match(word) or len(counted) == 3:
            break
        if word not in STOP_WORDS:
            counted.append(_singular(word))
    others = {_singular(w) for w in _words(question)} - set(counted) - {"how", "many"}
    for passage in passages:
        context = {_singular(w) for w in _words(f"{passage.path} {passage.heading}")}
        for offset, line in enumerate(passage.text.splitlines()):
            words = re.findall(r"[^\s,;:()]+", line.lower())
            near = {_singular(follower.strip(".")) for i, word in enumerate(words) if _NUMBER.match(word)
                    for follower in words[i + 1:i + 4]}
            if not near & set(counted):
                continue
            if not others or others & ({_singular(w) for w in _words(line)} | context):
                return _located(passage, offset)
    return None


class GroundedAnswer(BaseModel):
    """The fast path's result: the model's answer, what it was given, what supports it."""

    question: str
    answer: str
    sources: list[str] = Field(default_factory=list, description="path:line of the passages the answer rests on")
    evidence: list[str] = Field(default_factory=list, description="'path:line: text' picked by Python as support")
    passages: list[Passage] = Field(default_factory=list)
    grounded: bool = True
    seconds: float = 0.0
    tokens: int = 0
    calls: int = 1

    @property
    def text(self) -> str:
        """What a person is shown: the answer, then the lines it rests on, each with its source."""
        if not self.evidence:
            return self.answer
        return self.answer + "\n\nFrom the notes:\n" + "\n".join(f"- {line}" for line in self.evidence)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[^\W_]+", text.lower()) if w not in STOP_WORDS and len(w) > 1}  # ram_gb: ram, gb


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]  # "runs" is "run"
    return word[:5] if len(word) > 5 else word


def _located(passage: Passage, offset: int) -> str:
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
    wanted = {_stem(w) for w in _words(question)}
    candidates: list[tuple[int, Passage, int, str, set[str]]] = []
    for rank, passage in enumerate(passages):
        context = {_stem(w) for w in _words(f"{passage.path} {passage.heading}")}
        for offset, line in _units(passage):
            if rank >= PASSAGES_IN_PROMPT and not _key_row(passage, line, wanted):
                continue
            stems = {_stem(w) for w in _words(line)} & wanted
            if stems or (context & wanted and line.strip()):
                candidates.append((rank, passage, offset, line.strip(), stems | (context & wanted)))
    if not candidates:
        return []
    frequency = {w: sum(w in c[4] for c in candidates) for w in wanted}
    weight = {w: math.log(1 + len(candidates) / frequency[w]) for w in wanted if frequency[w]}
    scored = []
    for rank, passage, offset, line, stems in candidates:
        table = passage.heading.startswith("columns:")
        in_line = {_stem(w) for w in _words(f"{line} {passage.heading}" if table else line)} & wanted
        score = sum(weight[w] for w in in_line) + 0.3 * sum(weight[w] for w in stems - in_line)
        if _key_row(passage, line, wanted):
            score += max(weight.values())  # the row *of* pve1 (its key cell), not rows that mention it
        if _is_yaml(passage) and line.startswith("#"):
            score *= 0.5  # in a YAML file the values are in the keys; a comment only says what it holds
        shown = as_record(passage.heading, line) if table else line if _is_yaml(passage) \
            else _with_continuation(passage, offset)
        scored.append((-score, rank, offset, f"{_located(passage, offset)}: {shown}"))
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
    return passage.heading.startswith("columns:") and _stem(line.split(",", 1)[0].strip().lower()) in wanted


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


def _readable(passage: Passage) -> str:
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


def style_for(settings: Settings) -> Style:
    """`adaptive` for the embedded model, `passages` for any other.

    Measured with bench/answers.py: on the bundled SmolLM2-135M the best lines alone were answered
    right more often than whole passages; on Qwen2.5-Coder 1.5B the lines are cheap (a quarter of
    the prompt's tokens) and usually enough, but with the rule to say "The notes do not say." it
    refused a third of the questions whose line was in front of it (the pve1 RAM row, the
    Paperless port): `adaptive` then asks again without the rule and keeps only an answer the
    notes support."""
    return "adaptive" if uses_embedded_model(settings) else "passages"


_REFUSAL = re.compile(
    r"\b(not|never) (explicitly |directly |clearly )?(specified|mentioned|provided|stated|given|found|listed|"
    r"included|available|say|said)\b"
    r"|\b(do|does|did)(n't| not) (say|contain|mention|state|specify|provide)\b"
    r"|\bno (information|mention|details?)\b|\b(cannot|can't|unable to) (find|determine|answer|tell)\b")


def refused(answer: str) -> bool:
    """The model said the notes do not hold the answer (in the rule's words or its own:
    "The DHCP range ... is not specified in the notes.")."""
    flat = answer.lower()
    return NOT_FOUND.lower().rstrip(".") in flat or bool(_REFUSAL.search(flat))


_SPECIFIC = re.compile(r"[^\s,;:()\[\]`'\"]*\d[^\s,;:()\[\]`'\"]*|[A-Za-z]+(?:[-_.][A-Za-z0-9]+)+")


def supported(answer: str, notes: str, question: str) -> bool:
    """Whether the notes hold what the answer claims, as far as Python can tell: every number,
    date, address or dotted/hyphenated name in it ("64", "2026-11-30", "sam-homelab-backups") is
    in the notes, and the answer says something the question did not (not just "pve1 has RAM")."""
    flat_notes, flat_question = notes.lower(), question.lower()
    # "85%" is supported by "DEFAULT_LIMIT = 85  # percent": the value, not its punctuation
    specific = [t.strip(".%!?*").lower() for t in _SPECIFIC.findall(answer) if t.strip(".%!?*")]
    if any(token not in flat_notes for token in specific):
        return False
    asked = {_stem(w) for w in _words(question)}
    said = {_stem(w) for w in _words(answer)} - asked
    new_specific = [t for t in specific if t not in flat_question]
    return bool(new_specific) or any(w in {_stem(x) for x in _words(notes)} for w in said)


def prompt(question: str, passages: list[Passage], style: Style = "passages", computed: str | None = None,
           lines_from: list[Passage] | None = None, system: str = SYSTEM) -> list:
    """The messages of the one call: rules, then the notes, then the question.

    `passages`: the numbered passages, each under its source. `lines`: only the passage lines
    that best match the question (`evidence`), each with its `path:line`: less to read, which
    is what a 135M model needs (see `bench/answers.py`); picked from `lines_from` when given (more
    passages than are shown whole). `computed`: a fact Python computed (a row count), given first."""
    if style == "lines":
        picked = evidence(question, lines_from or passages, LINES_IN_PROMPT)
        notes = "\n".join(f"[{i}] {line}" for i, line in enumerate(picked, 1))
    else:
        notes = "\n\n".join(f"[{i}] {p.source}\n{_readable(p)[:PASSAGE_CHARS]}" for i, p in enumerate(passages, start=1))
    if computed:
        notes = f"[0] {computed}\n" + notes
    return [SystemMessage(content=system),
            HumanMessage(content=f"Notes:\n{notes}\n\nQuestion: {question}\nAnswer from the notes:")]


def _cited(answer: str, passages: list[Passage], support: list[str]) -> list[str]:
    """The passages the answer rests on: those it cites ([n] or a path), else those holding the
    lines Python picked as support, else all it was given."""
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
    named = [p.source for i, p in enumerate(passages, start=1) if i in numbers or p.path in answer]
    supporting = [p.source for p in passages if any(line.startswith(f"{p.path}:") for line in support)]
    return list(dict.fromkeys(named or supporting or [p.source for p in passages]))


def answer_from_passages(question: str, grounding: Grounding, model: BaseChatModel, *,
                         max_passages: int = PASSAGES_IN_PROMPT, style: Style = "passages",
                         max_tokens: int = ANSWER_MAX_TOKENS) -> GroundedAnswer:
    """The grounded answer to `question`: one model call, or for `adaptive` up to three.

    `adaptive`: (1) the best lines, with the rule to say "The notes do not say."; if the model
    says that, (2) the same lines without the rule, then (3) the whole passages without it,
    keeping the first answer that is no refusal and that the notes shown `supported`. When none
    is, the answer is the refusal: the notes do not say, as far as anyone can check."""
    started = time.monotonic()
    passages = grounding.passages[:max_passages]
    computed = grounding.count.line if grounding.count else None
    if grounding.count is not None:
        # Python counted: nothing is left to think about, and a 1.5B model asked to say "3 rows: 101
        # dev-debian; ..." answered "101 VMs" (issue #12). The answer is the count, with its rows.
        answer, tokens, calls = grounding.count.answer, 0, 0
    elif style != "adaptive":
        answer, tokens = _ask(model, prompt(question, passages, style, computed, grounding.passages), max_tokens)
        calls = 1
    else:
        answer, tokens, calls = _adaptive(question, grounding, passages, computed, model, max_tokens)
    support = ([computed] if computed else []) + evidence(question, grounding.passages, 1 if computed else 2)
    sources = _cited(answer, grounding.passages, support)
    if grounding.count and not any(s.startswith(f"{grounding.count.path}:") for s in sources):
        sources.insert(0, grounding.count.path)
    return GroundedAnswer(question=question, answer=answer, sources=sources,
                          evidence=support, passages=passages, grounded=bool(passages), calls=calls,
                          seconds=time.monotonic() - started, tokens=tokens)


def _adaptive(question: str, grounding: Grounding, passages: list[Passage], computed: str | None,
              model: BaseChatModel, max_tokens: int) -> tuple[str, int, int]:
    tries = [prompt(question, passages, "lines", computed, grounding.passages),
             prompt(question, passages, "lines", computed, grounding.passages, SYSTEM_ANSWER),
             prompt(question, passages, "passages", computed, system=SYSTEM_ANSWER)]
    first, tokens = _ask(model, tries[0], max_tokens, greedy=True)
    calls = 1
    if not refused(first) or not passages:
        return first, tokens, calls
    for messages in tries[1:]:
        answer, more = _ask(model, messages, max_tokens, greedy=True)
        tokens, calls = tokens + more, calls + 1
        if not refused(answer) and supported(answer, str(messages[-1].content), question):
            return answer, tokens, calls
    return first, tokens, calls


def _ask(model: BaseChatModel, messages: list, max_tokens: int, greedy: bool = False) -> tuple[str, int]:
    # Greedy on the embedded model: copying a value from the notes has one right answer, and
    # sampling made the same question right in one bench run and wrong in the next (issue #12).
    # (Not for hosted models: some refuse a temperature.)
    extra = {"temperature": ANSWER_TEMPERATURE} if greedy else {}
    reply = model.invoke(messages, max_tokens=max_tokens, **extra)
    text = reply.content if isinstance(reply.content, str) else str(reply.content)
    usage = getattr(reply, "usage_metadata", None) or {}
    return " ".join(text.split()) or NOT_FOUND, int(usage.get("total_tokens", 0))


def fast_path_plan(objective: str, decided: Route) -> Plan:
    """The one-step plan a fast-path run records, so its result, the run store and the UI see
    the same shape as a planned run (one "answer" step, by the generalist, no tools)."""
    step = SubTask(id="answer", title="Answer from the passages", agent="generalist", retries=0,
                   instructions=f"Answer from the knowledge-base passages: {objective}")
    return Plan(objective=objective, rationale=f"fast path: {decided.reason}", tasks=[step])


def answer_ungrounded(question: str, model: BaseChatModel) -> GroundedAnswer:
    """The same single call without passages: the baseline `bench/answers.py` measures against."""
    started = time.monotonic()
    reply = model.invoke([SystemMessage(content="You answer questions about the user's homelab. Be brief."),
                          HumanMessage(content=f"Question: {question}\nAnswer:")], max_tokens=ANSWER_MAX_TOKENS)
    text = reply.content if isinstance(reply.content, str) else str(reply.content)
    return GroundedAnswer(question=question, answer=" ".join(text.split()), grounded=False,
                          seconds=time.monotonic() - started)


def fast_path_report(objective: str, run_key: str, decided: Route, answered: GroundedAnswer,
                     started: float) -> RunReport:
    """The run report of a fast-path run: one completed "answer" step (one model call, two when
    the lines were refused and the passages asked)."""
    plan = fast_path_plan(objective, decided)
    step = plan.tasks[0]
    outcome = NodeOutcome(id=step.id, title=step.title, status=NodeStatus.COMPLETED, agent=step.agent,
                          result=answered.text, attempts=1, llm_calls=answered.calls, tokens=answered.tokens,
                          started=started, finished=time.time())
    return RunReport(run_key=run_key, objective=objective, status=RunStatus.COMPLETED, plan=plan,
                     outcomes={step.id: outcome}, started=started, finished=time.time(),
                     usage=Usage(llm_calls=answered.calls, tokens=answered.tokens), answer=answered.text,
                     sources={step.id: answered.sources})
