"""Can the configured model plan? Share of objectives that get a valid plan, without and with repair.

Runs the planner (no sub-task runs) on objectives of different shapes over the demo
workspace, with the model from FOREMAN_MODEL (default: the embedded local model).
Prints one line per objective and, last, JSON.

    .venv/bin/python bench/planning.py [--repairs 2] [--limit N] [--schema strict|full] [--tools-per-step]

`--schema` overrides the planner's choice (the strict schema for the embedded model,
the full one otherwise) to measure whether a model still needs the strict one. Each
valid plan is also scored for what the strict schema cannot force: the share of steps
that were granted a tool (`steps_with_tools`), since a file question planned without a
file tool reads no file.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="foreman-bench-planning-"))
# models stay where `foreman model pull` put them; everything else goes to the temp home
os.environ.setdefault("FOREMAN_LOCAL_MODELS_DIR",
                      str(Path(os.environ.get("FOREMAN_HOME", Path.home() / ".foreman")).expanduser() / "models"))
os.environ.setdefault("FOREMAN_HOME", str(HOME / "foreman"))
os.environ.setdefault("PREFECT_HOME", str(HOME / "prefect"))

import foreman  # noqa: F401

OBJECTIVES = [
    "What does the Q3 report recommend?",                                       # one read
    "List the files in the workspace.",                                          # one list
    "When is the launch meeting, and who owns the upload script?",               # read + answer
    "Summarize the meeting notes and the todo list, then combine both summaries.",  # fan-in
    "Find every mention of backups in the workspace and report them.",           # search
    "Which upload failed in the last log, and why?",                              # read log
    "Count the important tasks in the todo list; if there are more than 3, notify the user.",  # condition
    "Read the Wi-Fi notes and the meeting notes and say whether the guest network launch dates agree.",  # 2 reads + compare
    "Write a one-paragraph status update for the family about the homelab.",     # writer
    "Check the report for disk usage numbers and decide whether the NAS needs attention.",  # read + decide
    "Fetch http://127.0.0.1:9/status and summarize it.",                          # fetch (allowed host)
    "Plan the three most urgent homelab chores from the todo list and the report.",  # multi-step
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repairs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=len(OBJECTIVES))
    parser.add_argument("--schema", choices=["strict", "full"], help="default: the planner's own choice")
    args = parser.parse_args()

    from foreman.agents.models import describe_model
    from foreman.agents.planner import PlanningFailed, draft_schema, strict_draft_schema
    from foreman.agents.registry import registry
    from foreman.engine.cf_runner import build_scope
    from foreman.engine.policy import RunPolicy
    from foreman.flows.planner import make_planner
    from foreman.settings import get_settings
    from foreman.tools.catalog import ToolEnv

    settings = get_settings()
    print(describe_model(settings).splitlines()[0])
    env = ToolEnv.from_settings(settings)
    scope = build_scope(registry, RunPolicy.build(settings=settings))
    rows = []
    for objective in OBJECTIVES[: args.limit]:
        planner = make_planner(scope, settings, env)  # the same planner `foreman run` uses
        planner.max_repairs = args.repairs
        if args.schema:
            planner.schema = strict_draft_schema(scope) if args.schema == "strict" else draft_schema(scope)
        started = time.perf_counter()
        try:
            outcome = planner.plan(objective)
            tasks = outcome.valid.plan.tasks
            attempts, valid, nodes, errors = len(outcome.attempts), True, len(tasks), []
            with_tools = sum(bool(t.tools) for t in tasks) / len(tasks)
        except PlanningFailed as exc:
            attempts, valid, nodes, errors, with_tools = exc.attempts, False, 0, exc.errors, 0.0
        seconds = time.perf_counter() - started
        rows.append({"objective": objective, "valid": valid, "attempts": attempts, "nodes": nodes,
                     "steps_with_tools": round(with_tools, 2),
                     "seconds": round(seconds, 1), "last_errors": errors[:3]})
        print(f"{'ok ' if valid else 'BAD'} attempts={attempts} nodes={nodes} {seconds:6.1f}s  {objective}"
              + (f"  <- {errors[0][:120]}" if errors else ""))

    n = len(rows)
    print(json.dumps({
        "model": settings.model, "local_model": settings.local_model, "schema": args.schema or "planner's choice",
        "objectives": n, "load": os.getloadavg()[0],
        "steps_with_tools": round(sum(r["steps_with_tools"] for r in rows if r["valid"])
                                  / max(1, sum(r["valid"] for r in rows)), 2),
        "valid_without_repair": round(sum(r["valid"] and r["attempts"] == 1 for r in rows) / n, 3),
        "valid_with_repair": round(sum(r["valid"] for r in rows) / n, 3),
        "seconds_per_plan": round(sum(r["seconds"] for r in rows) / n, 1),
        "mean_nodes": round(sum(r["nodes"] for r in rows if r["valid"]) / max(1, sum(r["valid"] for r in rows)), 2),
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
