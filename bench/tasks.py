"""Tasks as a person runs them: `plan_and_run` per task, right-rate per kind, flow seconds.

    .venv/bin/python bench/tasks.py [--questions bench/questions/bakery.yaml]
                                    [--workspace bench/workspaces/bakery] [--kinds total,filter] [--limit N]

All tasks run on one copy of the workspace (indexed once, as a person's folder is), with the
task's switches (`allow_write`, `allow_code`); files a task writes are removed after it is judged,
so no task sees another's file. A task is right when the answer (the words
before "Computed by Foreman" or "From the notes") holds every `facts` string and no `must_not`
string, and a write task's `file` exists holding every `contains` and no `not_contains`
(case-insensitive). The homelab set (bench/questions/homelab.yaml over demo/workspace) runs
the same way. Prints a line per task, a summary per kind and route, and last one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_real_home = Path(os.environ.get("FOREMAN_HOME", Path.home() / ".foreman")).expanduser()
os.environ.setdefault("FOREMAN_LOCAL_MODELS_DIR", str(_real_home / "models"))
os.environ["FOREMAN_HOME"] = tempfile.mkdtemp(prefix="foreman-bench-tasks-")
os.environ.setdefault("FOREMAN_LOCAL_IDLE_MINUTES", "10")

import yaml

import foreman  # noqa: F401
from foreman.agents.models import describe_model
from foreman.settings import get_settings


def answer_part(text: str) -> str:
    for marker in ("\n\nComputed by Foreman", "\n\nFrom the notes:", "\n\nFrom the rows:"):
        text = text.split(marker)[0]
    return text


def judge(task: dict, text: str, folder: Path) -> tuple[bool, str]:
    said = answer_part(text).lower()
    missing = [f for f in task.get("facts") or [] if f.lower() not in said]
    wrong = [m for m in task.get("must_not") or [] if m.lower() in said]
    why = []
    if missing:
        why.append(f"missing {missing}")
    if wrong:
        why.append(f"says {wrong}")
    spec = task.get("file")
    if spec:
        target = folder / spec["path"]
        if not target.is_file():
            why.append(f"no file {spec['path']}")
        else:
            body = target.read_text(errors="replace").lower()
            why += [f"file lacks {c!r}" for c in spec.get("contains", []) if c.lower() not in body]
            why += [f"file has {c!r}" for c in spec.get("not_contains", []) if c.lower() in body]
    return not why, "; ".join(why)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=Path, default=REPO / "bench" / "questions" / "bakery.yaml")
    parser.add_argument("--workspace", type=Path, default=REPO / "bench" / "workspaces" / "bakery")
    parser.add_argument("--kinds", help="only these kinds, comma-separated")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    tasks = yaml.safe_load(args.questions.read_text())
    if args.kinds:
        tasks = [t for t in tasks if t.get("kind", "lookup") in args.kinds.split(",")]
    if args.limit:
        tasks = tasks[:args.limit]
    settings = get_settings()
    print(describe_model(settings))
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; {len(tasks)} tasks")

    from foreman.flows.planner import plan_and_run

    scratch = Path(tempfile.mkdtemp(prefix="foreman-bench-ws-"))
    folder = scratch / args.workspace.name
    shutil.copytree(args.workspace, folder)
    original = {p for p in folder.rglob("*")}
    rows = []
    for task in tasks:
        started = time.monotonic()
        try:
            state = plan_and_run(objective=task["question"], workspace=str(folder), allow_write=bool(task.get("allow_write")),
                                 allow_code=bool(task.get("allow_code")), return_state=True)
            result = state.result(raise_on_failure=False)
            text = getattr(result, "answer", str(result))
            route = (getattr(result, "route", None) or "-").split(":")[0]
            status = str(getattr(getattr(result, "status", None), "value", "?"))
            calls = getattr(result, "llm_calls", 0)
        except Exception as exc:  # noqa: BLE001  (a failed run is a wrong answer; the bench goes on)
            text, route, status, calls = f"error: {type(exc).__name__}: {exc}", "error", "FAILED", 0
        seconds = time.monotonic() - started
        ok, why = judge(task, text, folder)
        kind = task.get("kind", "lookup")
        rows.append({"kind": kind, "ok": ok, "seconds": seconds, "route": route, "status": status, "calls": calls})
        print(f"{'Y' if ok else 'n'} {seconds:5.1f}s [{kind}/{route}/{calls}] {task['question']}\n"
              f"    -> {answer_part(text)[:160]!r}{'  (' + why + ')' if why else ''}", flush=True)
        for extra in sorted(set(folder.rglob("*")) - original, reverse=True):
            shutil.rmtree(extra, ignore_errors=True) if extra.is_dir() else extra.unlink(missing_ok=True)

    by_kind = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    computed = [r for r in rows if r["kind"] != "lookup"]
    seconds = sorted(r["seconds"] for r in rows)
    summary = {
        "questions": str(args.questions.relative_to(REPO)) if args.questions.is_relative_to(REPO) else str(args.questions),
        "tasks": len(rows),
        "correct_rate": round(sum(r["ok"] for r in rows) / len(rows), 3) if rows else 0.0,
        "by_kind": {k: f"{sum(r['ok'] for r in v)}/{len(v)}" for k, v in sorted(by_kind.items())},
        "by_route": {k: f"{sum(r['ok'] for r in rows if r['route'] == k)}/{sum(r['route'] == k for r in rows)}"
                     for k in sorted({r["route"] for r in rows})},
        "seconds_mean": round(statistics.mean(seconds), 1) if rows else 0.0,
        "seconds_p95": round(seconds[math.ceil(0.95 * len(seconds)) - 1], 1) if rows else 0.0,
        "computed_seconds_mean": round(statistics.mean(r["seconds"] for r in computed), 1) if computed else 0.0,
        "completed_but_wrong": sum(r["status"] == "COMPLETED" and not r["ok"] for r in rows),
        "model": describe_model(settings).split(". Switch")[0],
        "load_1m": round(os.getloadavg()[0], 2),
    }
    for kind, items in sorted(by_kind.items()):
        print(f"{kind}: {sum(r['ok'] for r in items)}/{len(items)}, "
              f"{statistics.mean(r['seconds'] for r in items):.1f} s mean")
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
