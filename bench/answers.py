"""Answers over the demo workspace: correct rate and seconds per question, grounded vs not.

    .venv/bin/python bench/answers.py [--limit N] [--style passages|lines|both]
                                      [--plan-and-run [--ungrounded N] [--skip-components]]

Questions and the facts each answer must contain: bench/questions/homelab.yaml (shared with
bench/knowledge.py). An answer is correct when it contains every fact (case-insensitive).
The model is whatever FOREMAN_MODEL says (default: the bundled SmolLM2-135M), in a throwaway
FOREMAN_HOME (so the index is built cold once, then reused).

What is measured, in one run:
- grounded fast path (`engine.answer.answer_from_passages`): grounding (the workspace index
  refreshed, top passages) and one model call. Two rates: the model's own words
  (`correct_rate_grounded`), and what a person is shown, the words plus the passage lines
  Python picked as support (`correct_rate_grounded_shown`); the second says how often the
  right fact is in front of the reader, the first how often the model itself got it.
- not grounded: the same single call without passages (`answer_ungrounded`).
- the routing: how many lookups the fast path takes, and whether it sends the questions that
  need counting to the planner.
- with --plan-and-run: `flows.planner.plan_and_run` per question as a person runs it (grounded,
  the default: the fast path or a grounded plan), and with `ground=False` on the first N
  questions (the planner alone, much slower). These are the headline figures then; the
  one-call components are kept under `component_*`.

Prints one line per question and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A throwaway home for the index, but the models `foreman model pull` put in the real one.
_real_home = Path(os.environ.get("FOREMAN_HOME", Path.home() / ".foreman")).expanduser()
os.environ.setdefault("FOREMAN_LOCAL_MODELS_DIR", str(_real_home / "models"))
os.environ["FOREMAN_HOME"] = tempfile.mkdtemp(prefix="foreman-bench-answers-")
os.environ.setdefault("FOREMAN_LOCAL_IDLE_MINUTES", "5")
if "--local-model" in sys.argv:  # before the settings are read
    os.environ["FOREMAN_LOCAL_MODEL"] = sys.argv[sys.argv.index("--local-model") + 1]

import yaml

import foreman  # noqa: F401
from foreman.agents.models import build_chat_model, describe_model
from foreman.engine.answer import answer_from_passages, answer_ungrounded
from foreman.engine.grounding import ground
from foreman.engine.policy import RunPolicy
from foreman.engine.routing import route
from foreman.settings import get_settings


def correct(text: str, facts: list[str]) -> bool:
    return all(f.lower() in text.lower() for f in facts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=Path, default=REPO / "bench" / "questions" / "homelab.yaml")
    parser.add_argument("--workspace", type=Path, default=REPO / "demo" / "workspace")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (0: all)")
    parser.add_argument("--only", help="only questions containing one of these, '|'-separated (e.g. 'VLAN|port')")
    parser.add_argument("--style", choices=["passages", "lines", "adaptive", "both", "all"],
                        default="all", help="both: passages and lines; all: the three")
    parser.add_argument("--plan-and-run", action="store_true", help="also run plan_and_run per question (slow)")
    parser.add_argument("--ungrounded", type=int, default=5,
                        help="with --plan-and-run: how many questions also run with ground=False (the planner path)")
    parser.add_argument("--skip-components", action="store_true",
                        help="with --plan-and-run: only the flow, not the one-call components")
    parser.add_argument("--local-model", help="a catalogue model for the embedded server (FOREMAN_LOCAL_MODEL)")
    args = parser.parse_args()
    questions = yaml.safe_load(args.questions.read_text())
    if args.only:
        questions = [q for q in questions if any(part.lower() in q["question"].lower() for part in args.only.split("|"))]
    if args.limit:
        questions = questions[:args.limit]
    settings = get_settings()
    print(describe_model(settings))
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; {len(questions)} questions")
    policy = RunPolicy.build(settings=settings, workspace=args.workspace)
    model = build_chat_model(settings)

    first = ground("warm up", policy, settings=settings)
    print(f"index: cold {first.indexed.seconds:.1f} s ({first.indexed.summary()})")
    again = ground("warm up", policy, settings=settings)
    print(f"index: unchanged {again.indexed.seconds:.2f} s")
    answer_ungrounded("warm up", model)  # the model server's first start is not a question's time

    if args.plan_and_run and args.skip_components:
        flow = run_plan_and_run(questions, args.workspace, args.ungrounded)
        flow.update(model=describe_model(settings).split(". Switch")[0], load_1m=round(os.getloadavg()[0], 2))
        sys.stdout.write(json.dumps(flow) + "\n")
        return
    styles = {"both": ["passages", "lines"], "all": ["passages", "lines", "adaptive"]}.get(
        args.style, [args.style])
    rows: list[dict] = []
    for q in questions:
        kind = q.get("kind", "lookup")
        row = {"question": q["question"], "kind": kind}
        started = time.monotonic()
        grounding = ground(q["question"], policy, settings=settings)  # refreshes: what a run does
        row["ground_s"] = time.monotonic() - started
        decided = route(q["question"], grounding)
        row["route"] = decided.kind
        for style in styles:
            grounded = answer_from_passages(q["question"], grounding, model, style=style)
            row[style] = {"ok": correct(grounded.answer, q["facts"]), "shown_ok": correct(grounded.text, q["facts"]),
                          "seconds": row["ground_s"] + grounded.seconds, "answer": grounded.answer[:200],
                          "calls": grounded.calls, "tokens": grounded.tokens}
        plain = answer_ungrounded(q["question"], model)
        row["ungrounded"] = {"ok": correct(plain.answer, q["facts"]), "seconds": plain.seconds,
                             "answer": plain.answer[:200]}
        rows.append(row)
        marks = " ".join(f"{s}={'Y' if row[s]['ok'] else 'n'}/{'Y' if row[s]['shown_ok'] else 'n'}"
                         f" {row[s]['seconds']:.1f}s" for s in styles)
        print(f"[{kind}, route {decided.kind}] {q['question']}\n    {marks} ungrounded={'Y' if row['ungrounded']['ok'] else 'n'}"
              f" {plain.seconds:.1f}s", flush=True)
        for style in styles:
            print(f"    {style}: {row[style]['answer'][:150]}", flush=True)

    lookups = [r for r in rows if r["kind"] == "lookup"]
    computed = [r for r in rows if r["kind"] == "computed"]

    def rate(items: list[dict], key: str, field: str = "ok") -> float:
        return round(sum(r[key][field] for r in items) / len(items), 3) if items else 0.0

    by_style = {s: {"correct_rate": rate(lookups, s), "correct_rate_shown": rate(lookups, s, "shown_ok"),
                    "seconds_per_question": round(statistics.mean(r[s]["seconds"] for r in lookups), 2),
                    "tokens_per_question": round(statistics.mean(r[s]["tokens"] for r in lookups)),
                    "calls_per_question": round(statistics.mean(r[s]["calls"] for r in lookups), 2)}
                for s in styles}
    best = max(styles, key=lambda s: (by_style[s]["correct_rate"], by_style[s]["correct_rate_shown"]))
    summary = {
        "correct_rate_grounded": by_style[best]["correct_rate"],
        "correct_rate_grounded_shown": by_style[best]["correct_rate_shown"],
        "correct_rate_ungrounded": rate(lookups, "ungrounded"),
        "seconds_per_question": by_style[best]["seconds_per_question"],
        "seconds_per_question_ungrounded": round(statistics.mean(r["ungrounded"]["seconds"] for r in lookups), 2),
        "style": best, "by_style": by_style, "questions": len(lookups),
        "fast_path_share": round(sum(r["route"] == "answer" for r in lookups) / len(lookups), 3),
        "computed_routed_to_planner": f"{sum(r['route'] == 'plan' for r in computed)}/{len(computed)}",
        "model": describe_model(settings).split(". Switch")[0],
        "load_1m": round(os.getloadavg()[0], 2),
    }
    if args.plan_and_run:
        flow = run_plan_and_run(questions, args.workspace, args.ungrounded)
        summary["plan_and_run"] = flow
        # the figures are plan_and_run's: the flow as a person runs it
        summary.update({f"component_{k}": summary[k] for k in ("correct_rate_grounded", "correct_rate_ungrounded",
                                                               "seconds_per_question")})
        summary.update({k: flow[k] for k in ("correct_rate_grounded", "correct_rate_ungrounded",
                                             "seconds_per_question")})
    for s in styles:
        print(f"{s}: correct {by_style[s]['correct_rate']:.3f} (shown with its lines {by_style[s]['correct_rate_shown']:.3f}), "
              f"{by_style[s]['seconds_per_question']:.1f} s per question")
    print(f"ungrounded: correct {summary['correct_rate_ungrounded']:.3f}, {summary['seconds_per_question_ungrounded']:.1f} s")
    sys.stdout.write(json.dumps(summary) + "\n")


def words_of(answer: str) -> str:
    """The model's own words: a fast-path answer is followed by the lines Python picked as support."""
    return answer.split("\n\nFrom the notes:")[0]


def run_plan_and_run(questions: list[dict], workspace: Path, ungrounded_limit: int) -> dict:
    """`plan_and_run` as the flow ships, per question: grounded (the default) on every question,
    and with `ground=False` on the first `ungrounded_limit` (the planner path: much slower)."""
    from foreman.flows.planner import plan_and_run

    def one(q: dict, ground: bool) -> tuple[bool, bool, float, str]:
        started = time.monotonic()
        try:
            state = plan_and_run(objective=q["question"], workspace=str(workspace), ground=ground, return_state=True)
            result = state.result(raise_on_failure=False)
            text, route_taken = getattr(result, "answer", str(result)), getattr(result, "route", None) or "-"
        except Exception as exc:  # noqa: BLE001  (a failed run is a wrong answer, and the bench goes on)
            text, route_taken = f"error: {type(exc).__name__}: {exc}", "error"
        seconds = time.monotonic() - started
        ok, shown = correct(words_of(text), q["facts"]), correct(text, q["facts"])
        print(f"plan_and_run ground={ground}: {'Y' if ok else 'n'}/{'Y' if shown else 'n'} {seconds:.0f}s "
              f"[{route_taken[:40]}] {q['question']} -> {words_of(text)[:120]!r}", flush=True)
        return ok, shown, seconds, route_taken

    grounded = [one(q, True) for q in questions]
    plain = [one(q, False) for q in questions[:ungrounded_limit]]
    same = grounded[:len(plain)]

    def share(rows: list, i: int) -> float:
        return round(sum(r[i] for r in rows) / len(rows), 3) if rows else 0.0

    return {"correct_rate_grounded": share(grounded, 0), "correct_rate_grounded_shown": share(grounded, 1),
            "seconds_per_question": round(statistics.mean(r[2] for r in grounded), 1),
            "seconds_per_question_p95": round(sorted(r[2] for r in grounded)[math.ceil(0.95 * len(grounded)) - 1], 1),
            "correct_rate_ungrounded": share(plain, 0) if plain else None,  # not measured: None, not 0
            "seconds_per_question_ungrounded": round(statistics.mean(r[2] for r in plain), 1) if plain else 0.0,
            "correct_rate_grounded_same_questions": share(same, 0), "ungrounded_questions": len(plain),
            "questions": len(grounded), "fast_path_share": share([(r[3].startswith("a question"),) for r in grounded], 0)}


if __name__ == "__main__":
    main()
