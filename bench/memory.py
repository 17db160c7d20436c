"""Memory: recall of planted facts after 50 filler turns, prompt tokens as a thread grows, s per chat turn.

    .venv/bin/python bench/memory.py [--filler 50] [--budget 600] [--local-questions 3] [--skip-local]

Scripted model (the real chat-turn flow on a temporary Prefect server; only the thinking is
scripted): five facts are planted in a thread's first turns, then `--filler` turns of filler
talk follow, each a real `chat-turn` flow run (consolidation runs every
FOREMAN_MEMORY_CONSOLIDATE_EVERY turns, as in use). Then each fact is asked for, in the same
thread and in a new thread. The scripted model answers with a fact's keyword only when the
keyword reached its prompt, so "recalled" means retrieval and prompt assembly delivered the
fact. Baseline, measured in the same run: the same thread's history alone (summary + recent
turns, no long-term memory). Prompt tokens are counted (cl100k) over every message of each
turn's model call, against the tokens the whole thread would cost unbudgeted.

Bundled model (FOREMAN_MODEL=local, the catalogue default): kept short, because one call takes
10-40 s on this machine. The same facts and filler are stored directly (the filler is not
generated), consolidated, then `--local-questions` questions are asked in a new thread through
`chat-turn`; recalled means the reply contains the fact's keyword. Seconds per turn are wall
time of the whole flow run.

Prints one line per figure and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="foreman-bench-memory-"))
# the pulled models stay where `foreman model pull` put them; everything else is throwaway
_REAL_HOME = Path(os.environ.get("FOREMAN_HOME", Path.home() / ".foreman")).expanduser()
os.environ.setdefault("FOREMAN_LOCAL_MODELS_DIR", str(_REAL_HOME / "models"))
os.environ["FOREMAN_HOME"] = str(HOME / "foreman")
os.environ.setdefault("PREFECT_HOME", str(HOME / "prefect"))
os.environ.pop("PREFECT_API_URL", None)  # a temporary server of its own

import foreman  # noqa: F401  (offline env first)

FACTS = [  # (planted statement, question, keyword the answer must contain)
    ("My dog is called Rex.", "What is my dog called?", "Rex"),
    ("I live in Lisbon.", "Which city do I live in?", "Lisbon"),
    ("My NAS is called nas-orion.", "What is the name of my NAS?", "orion"),
    ("My favourite colour is teal.", "What is my favourite colour?", "teal"),
    ("I work as a radiographer.", "What is my job?", "radiographer"),
]
TOPICS = ["the weather", "backups", "a film", "DNS", "coffee", "the router", "a book", "the garden", "music",
          "certificates", "the football", "cooking"]


def filler(i: int) -> str:
    return f"Let's chat about {TOPICS[i % len(TOPICS)]} for a moment, nothing important, just turn {i}."


def prompt_tokens(turn) -> int:
    from foreman.tools.memory.history import count_tokens

    return sum(count_tokens(str(m.content)) for m in turn.messages)


def scripted(filler_turns: int) -> dict:
    from foreman.agents.models import use_model
    from foreman.agents.scripted import ScriptedChatModel, Turn, succeed
    from foreman.flows.chat import chat_turn
    from foreman.settings import get_settings
    from foreman.tools.memory.history import build_history
    from foreman.tools.memory.service import memory_store

    tokens: list[int] = []
    asking: dict[str, str | None] = {"keyword": None}

    def respond(turn: Turn):
        tokens.append(prompt_tokens(turn))
        keyword = asking["keyword"]
        if keyword is None:
            return succeed("Noted, thanks.")
        text = "\n".join(str(m.content) for m in turn.messages)
        return succeed("FOUND" if keyword in text else "MISSING")  # no keyword in a reply: nothing leaks forward

    user = "bench"
    thread = None
    started = time.perf_counter()
    with use_model(ScriptedChatModel(responder=respond)):
        for statement, _, _ in FACTS:
            thread = chat_turn(user=user, message=statement, thread=thread).thread
        for i in range(filler_turns):
            chat_turn(user=user, message=filler(i), thread=thread)
        per_turn_s = (time.perf_counter() - started) / (len(FACTS) + filler_turns)
        store = memory_store()
        window = build_history(store, user, thread, get_settings().memory_history_tokens)
        history_text = window.summary + "\n" + "\n".join(window.lines())
        same, new = [], []
        for _, question, keyword in FACTS:
            asking["keyword"] = keyword
            same.append(chat_turn(user=user, message=question, thread=thread).reply == "FOUND")
            new.append(chat_turn(user=user, message=question).reply == "FOUND")
    baseline = [k in history_text for _, _, k in FACTS]
    chat = len(FACTS) + filler_turns  # the turns before the questions
    turns = store.turns(user, thread)[:2 * chat]
    unbudgeted = sum(t.tokens for t in turns)
    growth = {n: tokens[n - 1] for n in sorted({1, 5, 10, 20, 30, 40, chat}) if n <= chat}
    last = tokens[max(0, chat - 10):chat]
    return {
        "recalled_same_thread": sum(same) / len(FACTS),
        "recalled_new_thread": sum(new) / len(FACTS),
        "recalled_history_only_baseline": sum(baseline) / len(FACTS),
        "prompt_tokens_by_turn": growth,
        "prompt_tokens_max": max(tokens[:chat]),
        "prompt_tokens_last_10_spread": max(last) - min(last),
        # what those last 10 turns would have added to an unbudgeted prompt
        "unbudgeted_growth_last_10": sum(t.tokens for t in turns[2 * (chat - 10):]),
        "unbudgeted_history_tokens": unbudgeted,
        # the last chat turn's prompt against the same prompt with the whole thread in it
        "prompt_vs_unbudgeted_ratio": round(tokens[chat - 1] / (tokens[0] + unbudgeted), 3),
        "budget": get_settings().memory_history_tokens,
        "facts_consolidated": len(store.facts(user)),
        "s_per_turn_scripted": round(per_turn_s, 2),
    }


def local(questions: int, filler_turns: int) -> dict:
    from foreman.flows.chat import chat_turn
    from foreman.tools.memory.consolidate import consolidate
    from foreman.tools.memory.history import count_tokens
    from foreman.tools.memory.service import memory_store

    os.environ["FOREMAN_MODEL"] = "local"
    from foreman.settings import reset_settings

    reset_settings()
    user = "bench-local"
    store = memory_store()
    thread = store.create_thread(user).id
    for statement, _, _ in FACTS:
        store.add_turn(user, thread, "user", statement, count_tokens(statement))
        store.add_turn(user, thread, "assistant", "Noted.", 2)
    for i in range(filler_turns):
        store.add_turn(user, thread, "user", filler(i), count_tokens(filler(i)))
        store.add_turn(user, thread, "assistant", "Sure.", 2)
    consolidate(user, thread)
    seconds, hits = [], []
    for _, question, keyword in FACTS[:questions]:
        t0 = time.perf_counter()
        state = chat_turn(user=user, message=question, return_state=True)
        seconds.append(time.perf_counter() - t0)
        reply = state.result().reply if state.is_completed() else f"(failed: {state.message})"
        hits.append(keyword.lower() in reply.lower())
        print(f"  local: {question!r} -> {reply[:120]!r} ({seconds[-1]:.1f} s)", flush=True)
    from foreman.agents.local_server import stop

    stop()  # this run's own embedded server (its home is throwaway)
    return {"local_recalled": sum(hits) / len(hits), "local_s_per_turn_median": round(statistics.median(seconds), 1),
            "local_s_per_turn": [round(s, 1) for s in seconds], "local_questions": len(hits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--filler", type=int, default=50)
    parser.add_argument("--local-questions", type=int, default=3)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--budget", type=int, default=600, help="FOREMAN_MEMORY_HISTORY_TOKENS for the run")
    args = parser.parse_args()
    os.environ["FOREMAN_MEMORY_HISTORY_TOKENS"] = str(args.budget)
    from foreman.settings import reset_settings

    reset_settings()
    summary = scripted(args.filler)
    for key, value in summary.items():
        print(f"{key}: {value}", flush=True)
    if not args.skip_local:
        found = local(args.local_questions, args.filler)
        for key, value in found.items():
            print(f"{key}: {value}", flush=True)
        summary.update(found)
    summary["filler_turns"] = args.filler
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
