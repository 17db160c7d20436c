"""Consolidation: durable facts a user stated in a thread move into their long-term memory.

Runs every `FOREMAN_MEMORY_CONSOLIDATE_EVERY` chat turns and when a chat ends. Python
picks the statements, not a model: a user's own declaratives about themselves ("my dog is
called Rex", "I prefer metric units", "remember that the NAS is nas01") are what later
conversations need, and a pattern finds them in milliseconds without inventing any. Each
fact keeps its source (thread and turn id). Idempotent twice over: the thread records how
far it was read (`consolidated_upto`), and a fact is unique per user by its normalised
text, so re-running over the same turns adds nothing.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from foreman.settings import Settings
from foreman.tools.knowledge.embedding import Embedder, default_embedder
from foreman.tools.memory.service import MAX_FACT_CHARS, memory_store
from foreman.tools.memory.store import Fact, TurnRecord

SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
DURABLE = re.compile(
    r"^(?:please\s+)?(?:remember\s+(?:that\s+)?(?P<remember>.+)"
    r"|(?P<mine>my\s+\w.*\b(?:is|are|was|were)\b.+)"
    r"|(?P<self>i(?:'m|\s+am)\s+(?!not sure|just|going|trying|asking|wondering|looking).+"
    r"|i\s+(?:live|work|prefer|like|love|hate|dislike|use|own|have|always|never|usually)\b.+)"
    r"|call\s+me\s+(?P<name>.+))$",
    re.IGNORECASE,
)
QUESTION_START = re.compile(r"^(?:what|who|where|when|why|how|which|do|does|did|can|could|is|are|will|would|should)\b",
                            re.IGNORECASE)
PERSON = [(re.compile(r"\bI am\b|\bI'm\b", re.IGNORECASE), "the user is"),
          (re.compile(r"\bmy\b", re.IGNORECASE), "the user's"),
          (re.compile(r"\bmine\b", re.IGNORECASE), "the user's"),
          (re.compile(r"\bI\s+have\b", re.IGNORECASE), "the user has"),
          (re.compile(r"\bI\s+(live|work|prefer|like|love|hate|dislike|use|own)\b", re.IGNORECASE), r"the user \1s"),
          (re.compile(r"\bI\b"), "the user"),
          (re.compile(r"\bme\b", re.IGNORECASE), "the user"),
          (re.compile(r"\bmyself\b", re.IGNORECASE), "themselves")]


class Consolidated(BaseModel):
    """What one consolidation did: turns read, facts added, facts it found already remembered."""

    thread: str
    turns_read: int = 0
    added: list[Fact] = []
    already: int = 0


def third_person(text: str) -> str:
    """'my dog is Rex' -> 'The user's dog is Rex': facts read the same from any later thread."""
    for pattern, replacement in PERSON:
        text = pattern.sub(replacement, text)
    text = text.strip().rstrip(".!") + "."
    return text[0].upper() + text[1:]


def durable_facts(text: str) -> list[str]:
    """The statements in one user turn worth keeping beyond its thread, in the third person."""
    found: list[str] = []
    for raw in SENTENCE.findall(text):
        sentence = raw.strip().strip(",;:")
        if len(sentence) < 6 or sentence.endswith("?") or QUESTION_START.match(sentence):
            continue
        match = DURABLE.match(sentence)
        if not match:
            continue
        if match.group("remember"):
            sentence = match.group("remember")
        elif match.group("name"):
            sentence = f"the user wants to be called {match.group('name')}"
        found.append(third_person(sentence)[:MAX_FACT_CHARS])
    return found


def consolidate(user: str, thread: str, *, settings: Settings | None = None, embedder: Embedder | None = None,
                from_start: bool = False) -> Consolidated:
    """Move the durable facts of `thread`'s unread user turns into `user`'s long-term memory.

    `from_start` reads the whole thread again (duplicates are still not written)."""
    embedder = embedder or default_embedder()
    store = memory_store(settings, embedder)
    info = store.thread(user, thread)  # refuses another user's thread
    turns: list[TurnRecord] = store.turns(user, thread, after=0 if from_start else info.consolidated_upto)
    report = Consolidated(thread=thread, turns_read=len(turns))
    candidates = [(turn, fact) for turn in turns if turn.role == "user" for fact in durable_facts(turn.content)]
    if candidates:
        vectors = embedder.embed([fact for _, fact in candidates])
        for (turn, fact), vector in zip(candidates, vectors, strict=True):
            stored, created = store.add_fact(user, fact, vector, source_thread=thread, source_turn=turn.id)
            if created:
                report.added.append(stored)
            else:
                report.already += 1
    if turns:
        store.set_consolidated(user, thread, turns[-1].ordinal)
    return report
