"""A thread's history as a chat turn shows it: recent turns verbatim, older ones summarized, within a token budget.

Why a budget rather than "the last N turns": a small local model has a small context, and
one pasted log can be larger than fifty short turns. The newest turns are kept whole (a
single turn larger than its share is cut, saying how much); the turns that no longer fit
are folded into the thread's summary, which is stored with the thread (`summarized_upto`),
so each turn summarizes only what newly fell out of the window and the prompt stops
growing once the thread passes the budget.

The summary is extractive (the opening words of each turn, in order), made by Python: no
extra model call per turn on a slow local model, and nothing invented. Durable facts of
those turns are not lost to it: consolidation moves them into long-term memory, which the
turn recalls by meaning.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from foreman.tools.memory.store import MemoryStore, TurnRecord

SUMMARY_SHARE = 0.3  # of the budget, for the summary of older turns; the rest is for recent turns
LINE_WORDS = 24  # words of a turn kept in the summary
EARLIER = re.compile(r"^\(\d+ earlier turns?, summarized further[^)]*\)\n?")

Summarizer = Callable[[str, Sequence[TurnRecord], int], str]


@functools.cache
def _encoding():
    import tiktoken  # its cl100k file is seeded offline by foreman.runtime

    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    """Tokens in `text` as ControlFlow counts them (cl100k); a fair proxy for any chat model."""
    return len(_encoding().encode(text, disallowed_special=()))


def clip_tokens(text: str, limit: int) -> str:
    """`text` cut to `limit` tokens, saying how much was cut."""
    ids = _encoding().encode(text, disallowed_special=())
    if len(ids) <= limit:
        return text
    return _encoding().decode(ids[:max(limit - 12, 1)]) + f" […{len(ids) - limit + 12} tokens cut]"


def turn_line(turn: TurnRecord, words: int = LINE_WORDS) -> str:
    parts = turn.content.split()
    text = " ".join(parts[:words]) + (" …" if len(parts) > words else "")
    return f"{turn.role}: {text}"


def extractive_summary(previous: str, turns: Sequence[TurnRecord], limit: int) -> str:
    """`previous` plus one line per turn; over `limit` tokens, the oldest lines go into a counted header."""
    match = EARLIER.match(previous)
    dropped = int(previous[1:].split(" ", 1)[0]) if match else 0
    lines = [line for line in previous[match.end() if match else 0:].splitlines() if line.strip()]
    lines += [turn_line(t) for t in turns]

    def render() -> str:
        head = (f"({dropped} earlier turn{'s' if dropped != 1 else ''}, summarized further: their durable facts "
                "are in long-term memory)\n") if dropped else ""
        return head + "\n".join(lines)

    while lines and count_tokens(render()) > limit:
        lines.pop(0)
        dropped += 1
    return render() if count_tokens(render()) <= limit else clip_tokens(render(), limit)


class HistoryWindow(BaseModel):
    """What a turn sees of its thread."""

    summary: str = ""
    turns: list[TurnRecord] = []
    tokens: int = 0  # summary + recent turns, as rendered

    def lines(self) -> list[str]:
        return [f"{t.role}: {t.content}" for t in self.turns]


def build_history(store: MemoryStore, user: str, thread: str, budget: int,
                  summarize: Summarizer = extractive_summary) -> HistoryWindow:
    """The thread's history within `budget` tokens; turns that fell out are summarized and stored so."""
    info = store.thread(user, thread)
    pending = store.turns(user, thread, after=info.summarized_upto)
    summary_budget = int(budget * SUMMARY_SHARE)
    turn_budget = budget - summary_budget
    kept: list[TurnRecord] = []
    used = 0
    for turn in reversed(pending):
        line = f"{turn.role}: {turn.content}"
        cost = count_tokens(line)
        if not kept and cost > turn_budget:  # the newest turn alone is too large: cut it, never drop it
            clipped = clip_tokens(turn.content, turn_budget - 8)
            kept.append(turn.model_copy(update={"content": clipped}))
            used = count_tokens(f"{turn.role}: {clipped}")
            continue
        if used + cost > turn_budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    first_kept = kept[0].ordinal if kept else (pending[-1].ordinal + 1 if pending else 0)
    fallen = [t for t in pending if t.ordinal < first_kept]
    summary = info.summary
    if fallen:
        summary = summarize(info.summary, fallen, summary_budget)
        store.set_summary(user, thread, summary, fallen[-1].ordinal)
    window = HistoryWindow(summary=summary, turns=kept)
    window.tokens = count_tokens(summary) + sum(count_tokens(line) for line in window.lines())
    return window
