"""The records the memory store reads and writes: plain data, safe to return from a flow or print."""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel

Role = Literal["user", "assistant"]


class ThreadInfo(BaseModel):
    id: str
    user: str
    created: float
    updated: float
    summary: str = ""
    summarized_upto: int = 0  # turns with ordinal <= this are in `summary`
    consolidated_upto: int = 0  # turns with ordinal <= this were read by consolidation
    turns: int = 0


class TurnRecord(BaseModel):
    id: int
    thread: str
    user: str
    ordinal: int
    role: Role
    content: str
    tokens: int
    at: float
    run_id: str | None = None


class Fact(BaseModel):
    id: int
    user: str
    namespace: str
    content: str
    source_thread: str | None = None
    source_turn: int | None = None  # the turn's id (`TurnRecord.id`)
    created: float


class Forgotten(BaseModel):
    """What a delete removed, by kind: the count a person is shown."""

    threads: int = 0
    turns: int = 0
    facts: int = 0
    vectors: int = 0

    def __str__(self) -> str:
        return (f"{self.threads} thread(s), {self.turns} turn(s), {self.facts} fact(s), "
                f"{self.vectors} embedding(s)")


class Hit(NamedTuple):
    fact_id: int
    score: float  # higher is better: cosine similarity, or -bm25
