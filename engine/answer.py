"""The fast path: a question one step can answer gets one grounded model call, not a plan.

`engine/routing.py` decides (pure Python, no model call) that an objective is such a question;
`answer_from_passages` makes the call: the passages (or the best lines of them, picked by
`engine/evidence.py`) with their sources, the question, and the rule to answer only from them.
On the embedded model a refusal is checked, not obeyed (`_adaptive`), and an answer is kept only
when the notes support it.

The answer keeps the model's words apart from `evidence`: the passage lines Python picks
as the best support, so a reader can check the answer, and a benchmark can tell the model's
correctness from the retrieval's.
"""

from __future__ import annotations

import re
import time
from typing import Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from foreman.agents.models import uses_embedded_model
from foreman.engine.evidence import PASSAGES_IN_PROMPT, evidence, readable, stated_count, time_span
from foreman.engine.grounding import Grounding
from foreman.engine.plan import Plan, SubTask
from foreman.engine.records import RunReport, one_step_report
from foreman.engine.routing import Route
from foreman.settings import Settings
from foreman.tools.knowledge.search import Passage
from foreman.tools.text import stem, words

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
    asked = {stem(w) for w in words(question)}
    said = {stem(w) for w in words(answer)} - asked
    new_specific = [t for t in specific if t not in flat_question]
    return bool(new_specific) or any(w in {stem(x) for x in words(notes)} for w in said)


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
        notes = "\n\n".join(f"[{i}] {p.source}\n{readable(p)[:PASSAGE_CHARS]}" for i, p in enumerate(passages, start=1))
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
    span = time_span(question, grounding.passages)
    computed = span or stated_note(question, grounding.passages)
    if style != "adaptive":
        answer, tokens = _ask(model, prompt(question, passages, style, computed, grounding.passages), max_tokens)
        calls = 1
    else:
        answer, tokens, calls = _adaptive(question, grounding, passages, computed, model, max_tokens)
    answer = in_minutes_asked(answer, question, span)
    support = evidence(question, grounding.passages, 2)
    sources = _cited(answer, grounding.passages, support)
    return GroundedAnswer(question=question, answer=answer, sources=sources,
                          evidence=support, passages=passages, grounded=bool(passages), calls=calls,
                          seconds=time.monotonic() - started, tokens=tokens)


def in_minutes_asked(answer: str, question: str, span: str | None) -> str:
    """The answer with Python's minute count when the question asks for minutes and the model
    put the span another way ("1 hour 35 minutes" for "how many minutes")."""
    minutes = re.search(r"\((\d+) minutes, computed by Foreman\)", span or "")
    if minutes is None or not re.search(r"\bminutes?\b|\bmins?\b", question, re.IGNORECASE):
        return answer
    if re.search(rf"(?<![\d.]){minutes.group(1)}(?![\d.])", answer):
        return answer
    return f"{answer.rstrip()} ({minutes.group(1)} minutes)"


def stated_note(question: str, passages: list[Passage]) -> str | None:
    """For a "how many" question whose count a line states, that line's count as note [0]:
    "notes/home-assistant.md:4 states 23 devices". Shown only the line "23 devices (12 lights,
    6 door and window sensors, 5 smart plugs)", the 1.5B answered 12 (issue #12)."""
    if not re.search(r"\bhow many\b", question, re.IGNORECASE):
        return None
    stated = stated_count(question, passages)
    return f"{stated.location} states {stated.phrase}" if stated else None


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
    return one_step_report(run_key, fast_path_plan(objective, decided), text=answered.text, calls=answered.calls,
                           tokens=answered.tokens, sources=answered.sources, started=started)
