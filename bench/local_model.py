"""Benchmark the embedded local model under real ControlFlow tasks.

Runs small ControlFlow tasks of every result type (text, number, boolean, list,
pydantic object, Enum choice), with and without tools, on the local model inside one
Prefect flow, and checks each result against a known answer. Prints a table, then
one JSON line (the last line) with:

* prompt / generation tokens per second, from llama.cpp's own timings;
* cold start seconds, seconds per task, seconds per one-turn task (one LLM call);
* completion rate (task finished successfully), finish rate (successful or failed,
  never left running) and correct-result rate.

    python bench/local_model.py                       # the selected model, 30 tasks
    python bench/local_model.py --quick               # 8 tasks
    python bench/local_model.py --model tiny          # a catalogue model (or a GGUF path)
    python bench/local_model.py --tool-mode native    # llama.cpp's own tool calls, not forced ones
    python bench/local_model.py --kinds boolean       # only the yes/no tasks
    python bench/local_model.py --models all          # every installed catalogue model, forced and native
    python bench/local_model.py --drop-sweep          # what each ControlFlow prompt section costs and gives

The first 24 tasks are the original set; the 6 added for issue #11 have answers a model
that always says True, or always picks the first option, gets wrong ("Is fire cold?" was
the only False one before). Correct rates are given for all 30 and for the 24.

The server runs under a temporary FOREMAN_HOME (models are read from the real models
folder) and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class Color(Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Sentiment(Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Size(Enum):
    SMALL = "small"
    LARGE = "large"


class Person(BaseModel):
    name: str
    age: int


class City(BaseModel):
    name: str
    country: str


class Point(BaseModel):
    x: int
    y: int


@dataclass
class Case:
    """One task: objective, result type, optional tools, and how to judge the result."""

    kind: str
    objective: str
    result_type: Any
    check: Callable[[Any, dict[str, list]], bool]
    tools: list[Callable] = field(default_factory=list)
    quick: bool = False
    added: bool = False  # not in the original 24


def _text_has(word: str) -> Callable[[Any, dict], bool]:
    return lambda r, _: isinstance(r, str) and word in r.lower()


def _eq(value: Any) -> Callable[[Any, dict], bool]:
    return lambda r, _: r == value


def _called(tool: str, **args: Any) -> Callable[[Any, dict], bool]:
    return lambda _, calls: any(all(c.get(k) == v for k, v in args.items()) for c in calls[tool])


CALLS: dict[str, list[dict[str, Any]]] = {}


def set_light(color: Color) -> str:
    """Switch the light to the given color."""
    CALLS.setdefault("set_light", []).append({"color": Color(color)})
    return f"The light is now {Color(color).value}."


def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    CALLS.setdefault("add", []).append({"a": a, "b": b})
    return a + b


def get_weather(city: str) -> str:
    """Get today's weather for a city."""
    CALLS.setdefault("get_weather", []).append({"city": city})
    return "sunny"


def set_fan(mode: Size) -> str:
    """Set the fan speed: small (slow) or large (fast)."""
    CALLS.setdefault("set_fan", []).append({"mode": Size(mode)})
    return f"Fan set to {Size(mode).value}."


CASES: list[Case] = [
    Case("text", "Reply with the single word: hello", str, _text_has("hello"), quick=True),
    Case("text", "What is the capital of France? Answer with the city name.", str, _text_has("paris")),
    Case("text", "Repeat this word exactly: banana", str, _text_has("banana")),
    Case("number", "What is 2 + 3?", int, _eq(5), quick=True),
    Case("number", "How many legs does a dog have?", int, _eq(4)),
    Case("number", "What is 10 minus 4?", int, _eq(6)),
    Case("number", "What is half of 3? Answer as a decimal number.", float, _eq(1.5)),
    Case("boolean", "Is the sky blue on a clear day?", bool, _eq(True), quick=True),
    Case("boolean", "Is fire cold?", bool, _eq(False)),
    Case("boolean", "Is 7 greater than 3?", bool, _eq(True)),
    Case("list", "List the three words: red, yellow, blue.", list[str],
         lambda r, _: [str(x).lower() for x in r] == ["red", "yellow", "blue"], quick=True),
    Case("list", "List the numbers 1, 2 and 3.", list[int], _eq([1, 2, 3])),
    Case("list", "List the first two days of the week.", list[str],
         lambda r, _: [str(x).lower() for x in r] == ["monday", "tuesday"]),
    Case("object", "Extract the person from: 'Alice is 30 years old.'", Person,
         lambda r, _: r.name.lower() == "alice" and r.age == 30, quick=True),
    Case("object", "Extract the city and its country from: 'Paris is in France.'", City,
         lambda r, _: "paris" in r.name.lower() and "france" in r.country.lower()),
    Case("object", "Make the point with x = 2 and y = 5.", Point, lambda r, _: (r.x, r.y) == (2, 5)),
    Case("choice", "What color is grass?", Color, _eq(Color.GREEN), quick=True),
    Case("choice", "Classify the sentiment of: 'I love this, it is wonderful!'", Sentiment,
         _eq(Sentiment.POSITIVE)),
    Case("choice", "Is an elephant small or large?", Size, _eq(Size.LARGE)),
    Case("tool", "Use the set_light tool to make the light red, then report the color.", str,
         _called("set_light", color=Color.RED), tools=[set_light], quick=True),
    Case("tool", "Use the add tool to add 2 and 3. The result is the sum.", int,
         lambda r, c: r == 5 and bool(c["add"]), tools=[add], quick=True),
    Case("tool", "Use the get_weather tool for Paris and report the weather.", str,
         lambda r, c: bool(c["get_weather"]) and "sunny" in str(r).lower(), tools=[get_weather]),
    Case("tool", "Use the set_fan tool to set the fan to large.", str,
         _called("set_fan", mode=Size.LARGE), tools=[set_fan]),
    Case("tool", "Use the set_light tool to make the light blue.", bool,
         _called("set_light", color=Color.BLUE), tools=[set_light]),
    # issue #11: answers that "always True" / "always the first option" get wrong
    Case("boolean", "Is 2 greater than 5?", bool, _eq(False), added=True),
    Case("boolean", "Can a fish climb trees?", bool, _eq(False), added=True),
    Case("boolean", "Is ice hot?", bool, _eq(False), added=True),
    Case("number", "How many wheels does a bicycle have?", int, _eq(2), added=True),
    Case("choice", "Classify the sentiment of: 'This is awful, I hate it.'", Sentiment,
         _eq(Sentiment.NEGATIVE), added=True),
    Case("choice", "Is a mouse small or large?", Size, _eq(Size.SMALL), added=True),
]


def _prepare_env(home: Path) -> None:
    """Temp homes for Foreman and Prefect, set before either is imported; models stay where they are."""
    from foreman.agents.model_store import models_dir
    from foreman.settings import Settings

    os.environ.setdefault("FOREMAN_LOCAL_MODELS_DIR", str(models_dir(Settings())))
    os.environ["FOREMAN_HOME"] = str(home / "foreman")
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "900")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _stats(base_url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(base_url.removesuffix("/v1") + "/stats", timeout=10).json()


def _peak_rss_gb(pid: int) -> float | None:
    """The server's peak resident memory (VmHWM), Linux only."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024 / 1024, 2)
    except OSError:
        return None
    return None


def run(quick: bool, max_llm_calls: int, kinds: list[str] | None = None) -> dict[str, Any]:
    import foreman  # noqa: F401  (offline setup before ControlFlow)
    from foreman.agents.local import local_chat_model
    from foreman.agents.local_server import ensure_running, stop
    from foreman.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    started = time.perf_counter()
    info = ensure_running(settings)
    cold_start_s = time.perf_counter() - started

    import controlflow as cf
    import prefect

    agent = cf.Agent(name="local", model=local_chat_model(settings))
    cases = [c for c in CASES if c.quick] if quick else CASES
    cases = [c for c in cases if not kinds or c.kind in kinds]

    @prefect.flow(name="bench-local-model")
    def bench_flow() -> list[dict[str, Any]]:
        rows = []
        for case in cases:
            CALLS.clear()
            for tool in case.tools:
                CALLS.setdefault(tool.__name__, [])
            before = _stats(info.base_url)
            task = cf.Task(
                case.objective, result_type=case.result_type, agents=[agent],
                tools=case.tools, max_llm_calls=max_llm_calls,
            )
            t0 = time.perf_counter()
            error = None
            try:
                task.run(raise_on_failure=False)
            except Exception as exc:  # noqa: BLE001  (a crash is a result, not a stop)
                error = f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - t0
            after = _stats(info.base_url)
            calls = {k: list(v) for k, v in CALLS.items()}
            result = task.result if task.is_successful() else None
            try:
                correct = task.is_successful() and bool(case.check(result, calls))
            except Exception:  # noqa: BLE001  (a check that cannot run is a wrong result)
                correct = False
            rows.append({
                "kind": case.kind, "objective": case.objective, "added": case.added,
                "status": task.status.value, "result": repr(result)[:60],
                "correct": correct, "seconds": seconds,
                "llm_calls": after["requests"] - before["requests"],
                "model_ms": (after["prompt_ms"] - before["prompt_ms"])
                + (after["predicted_ms"] - before["predicted_ms"]),
                "error": error,
            })
        return rows

    flow_started = time.perf_counter()
    rows = bench_flow()
    flow_s = time.perf_counter() - flow_started
    stats = _stats(info.base_url)
    peak_rss = _peak_rss_gb(info.pid)
    stop(settings)

    def rate(pred: Callable[[dict], bool]) -> float:
        return round(sum(map(pred, rows)) / len(rows), 3)

    one_turn = [r["seconds"] for r in rows if r["llm_calls"] == 1]
    summary = {
        "tasks": len(rows),
        "prompt_tokens_per_s": round(stats["prompt_tokens"] / max(stats["prompt_ms"], 1) * 1000, 1),
        "generation_tokens_per_s": round(
            stats["predicted_tokens"] / max(stats["predicted_ms"], 1) * 1000, 1
        ),
        "prompt_cache_hit": round(
            stats["cached_tokens"] / max(stats["cached_tokens"] + stats["prompt_tokens"], 1), 3
        ),
        "prompt_tokens_per_task": round((stats["prompt_tokens"] + stats["cached_tokens"]) / max(len(rows), 1)),
        "computed_prompt_tokens_per_task": round(stats["prompt_tokens"] / max(len(rows), 1)),
        "dropped_sections": os.environ.get("FOREMAN_LOCAL_PROMPT_DROP", ""),
        "cold_start_s": round(cold_start_s, 2),
        "seconds_per_task": round(statistics.mean(r["seconds"] for r in rows), 2),
        "seconds_per_one_turn_task": round(statistics.mean(one_turn), 2) if one_turn else None,
        "model_seconds_per_task": round(statistics.mean(r["model_ms"] for r in rows) / 1000, 2),
        "llm_calls_per_task": round(statistics.mean(r["llm_calls"] for r in rows), 2),
        "completion_rate": rate(lambda r: r["status"] == "SUCCESSFUL"),
        "finish_rate": rate(lambda r: r["status"] in ("SUCCESSFUL", "FAILED")),
        "correct_rate": rate(lambda r: r["correct"]),
        "correct_rate_original_24": _rate([r for r in rows if not r["added"]]),
        "correct_rate_added": _rate([r for r in rows if r["added"]]),
        "correct_rate_with_tools": _sub_rate(rows, tools=True),
        "correct_rate_without_tools": _sub_rate(rows, tools=False),
        "parse_failures": stats["parse_failures"],
        "answered_in_words": stats.get("answered_in_words", 0),
        "flow_seconds": round(flow_s, 1),
        "server_peak_rss_gb": peak_rss,
        "model": info.model_name,
        "tool_mode": settings.local_tool_calls or "catalogue default",
        "load": os.getloadavg()[0],
    }
    return {"rows": rows, "summary": summary}


def _rate(rows: list[dict]) -> float | None:
    return round(sum(r["correct"] for r in rows) / len(rows), 3) if rows else None


def _sub_rate(rows: list[dict], *, tools: bool) -> float | None:
    chosen = [r for r in rows if (r["kind"] == "tool") == tools]
    return round(sum(r["correct"] for r in chosen) / len(chosen), 3) if chosen else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 tasks instead of 30")
    parser.add_argument("--max-llm-calls", type=int, default=4, help="per task, then it fails")
    parser.add_argument("--model", help="a catalogue name or a GGUF path (default: the selected model)")
    parser.add_argument("--tool-mode", choices=["forced", "native", "native-required"])
    parser.add_argument("--kinds", help="only these task kinds, comma-separated (e.g. boolean,choice)")
    parser.add_argument("--models", help="'all' (every installed catalogue model) or names, comma-separated")
    parser.add_argument("--drop-section", help="ControlFlow prompt sections the model does not see, comma-separated "
                                               "(e.g. 'Active Tasks,Tools'): agents/local_prompts.py")
    parser.add_argument("--drop-sweep", action="store_true",
                        help="one run with the whole prompt, then one per section left out; a table, then JSON")
    args = parser.parse_args(argv)
    if args.drop_sweep:
        return sweep_sections(args)
    if args.models:
        return compare(args)
    if args.drop_section:
        os.environ["FOREMAN_LOCAL_PROMPT_DROP"] = args.drop_section
    if args.model:
        key = "FOREMAN_LOCAL_MODEL_PATH" if args.model.endswith(".gguf") else "FOREMAN_LOCAL_MODEL"
        os.environ[key] = args.model
    if args.tool_mode:
        os.environ["FOREMAN_LOCAL_TOOL_CALLS"] = args.tool_mode
    with tempfile.TemporaryDirectory(prefix="foreman-bench-") as tmp:
        _prepare_env(Path(tmp))
        report = run(args.quick, args.max_llm_calls, args.kinds.split(",") if args.kinds else None)
    print(f"{'kind':8} {'status':10} {'ok':3} {'calls':5} {'sec':>6}  objective -> result")
    for r in report["rows"]:
        print(
            f"{r['kind']:8} {r['status']:10} {'yes' if r['correct'] else 'no':3} "
            f"{r['llm_calls']:5} {r['seconds']:6.1f}  {r['objective'][:50]} -> {r['result']}"
            + (f"  [{r['error'][:80]}]" if r["error"] else "")
        )
    print(json.dumps(report["summary"]))
    return 0


def compare(args: argparse.Namespace) -> int:
    """Each model (and tool mode) in its own process, one after another; a table, then JSON."""
    import subprocess

    from foreman.agents.model_catalog import CATALOG
    from foreman.agents.model_store import installed_path
    from foreman.settings import Settings

    settings = Settings()
    names = [n for n in CATALOG if installed_path(CATALOG[n], settings)] if args.models == "all" \
        else args.models.split(",")
    runs = []
    for name in names:
        modes = [args.tool_mode] if args.tool_mode else (
            ["forced", "native", "native-required"] if CATALOG[name].native_tool_calls else ["forced"])
        for mode in modes:
            command = [sys.executable, __file__, "--model", name, "--tool-mode", mode,
                       "--max-llm-calls", str(args.max_llm_calls)] + (["--quick"] if args.quick else []) + (
                ["--kinds", args.kinds] if args.kinds else [])
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = done.stdout.strip().splitlines()
            summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else \
                {"error": (done.stderr or done.stdout)[-400:]}
            # each run's own summary as it ends, so a long comparison stopped half-way keeps its figures
            print(f"## {name} ({mode}), load {os.getloadavg()[0]:.1f}\n" + "\n".join(lines[:-1])
                  + f"\n# {json.dumps(summary)}", flush=True)
            runs.append({"name": name, "mode": mode, **summary})
    columns = ("correct_rate", "correct_rate_original_24", "correct_rate_with_tools", "correct_rate_without_tools",
               "completion_rate", "seconds_per_one_turn_task", "prompt_tokens_per_s", "generation_tokens_per_s",
               "cold_start_s", "server_peak_rss_gb", "load")
    print("model mode " + " ".join(columns))
    for r in runs:
        print(r["name"], r["mode"], *(r.get(c) for c in columns))
    print(json.dumps(runs))
    return 0


SECTIONS = ("Agent", "Flow", "Instructions", "LLM Instructions", "Active Tasks", "Tools")


def sweep_sections(args: argparse.Namespace) -> int:
    """The selected model with the whole prompt, then with each ControlFlow section left out (and all
    of them at the end), each in its own process: what each section costs in tokens and gives in answers."""
    import subprocess

    variants = ["", *SECTIONS, ",".join(SECTIONS)]
    runs = []
    for drop in variants:
        command = [sys.executable, __file__, "--max-llm-calls", str(args.max_llm_calls)] + (
            ["--quick"] if args.quick else []) + (["--model", args.model] if args.model else []) + (
            ["--tool-mode", args.tool_mode] if args.tool_mode else []) + (["--drop-section", drop] if drop else []) + (
            ["--kinds", args.kinds] if args.kinds else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else \
            {"error": (done.stderr or done.stdout)[-400:]}
        print(f"## without {drop or 'nothing'}, load {os.getloadavg()[0]:.1f}\n" + "\n".join(lines[:-1])
              + f"\n# {json.dumps(summary)}", flush=True)
        runs.append({"dropped": drop or "nothing", **summary})
    columns = ("correct_rate", "correct_rate_with_tools", "correct_rate_without_tools", "prompt_tokens_per_task",
               "computed_prompt_tokens_per_task", "seconds_per_task", "load")
    print("dropped " + " ".join(columns))
    for r in runs:
        print(repr(r["dropped"]), *(r.get(c) for c in columns))
    print(json.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
