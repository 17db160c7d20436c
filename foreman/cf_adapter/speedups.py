"""Cut ControlFlow's per-turn Prefect bookkeeping so concurrent sub-tasks really run concurrently.

Why this exists
---------------
ControlFlow 0.12.1 wraps three internal methods in Prefect tasks (`prefect_task`, applied
at import time as decorators):

* `Orchestrator._run` / `_run_async`   -> a task run "Run agent orchestrator" per `Task.run()`
* `Agent._run_model` / `_run_model_async` -> a task run "Call LLM" per model call
* `Tool.run` / `run_async`            -> a task run "Tool call: <name>" per tool call

and creates a Prefect markdown artifact after every model reply and every tool call.
Measured with `bench/overhead_profile.py` (2 shared cores, scripted model, one-turn
sub-tasks, each in its own Prefect task run, submitted together from one flow), that
bookkeeping is most of what a sub-task costs: ~75-85 ms of client CPU and ~270-310 ms of
Prefect-server CPU per sub-task, against ~30 ms and ~60 ms without it. The client CPU
holds the GIL, so the bookkeeping of N concurrent sub-tasks runs one after another: 8
sub-tasks with a 1 s model took 2.1-2.3 s of node time instead of ~1 s. It also has
worse properties than cost:

1. **Each nested run walks its parameters** with Prefect's `visit_collection` (looking for
   upstream futures), and those include `self`: the Orchestrator, hence its Flow and the
   Flow's history, every Task, Agent, model and handler. With ControlFlow's default,
   process-wide `InMemoryHistory` that walk grows with every task the process ever ran
   (~100 ms per step after 5 steps, ~300 ms after 80) and races with other threads
   writing it: 17-18 of 24 concurrent steps failed ("dictionary changed size during
   iteration", "Failed to resolve inputs in parameter 'self'"). `foreman.cf_adapter.taskrun.run_task`
   now gives each run a private history, which stops the growth and those failures; the
   walk itself remains, and so does:
2. **`self` is bound through a shared function object.** Prefect's `Task.__get__` stores
   the instance on the wrapped function (`fn.__prefect_self__`), which all instances
   share; a thread can run the method with another thread's instance. A 4-thread probe
   of a Prefect task method saw the wrong `self` in 1 of 600 calls. For ControlFlow that
   would be a tool call run on another sub-task's Tool, or a turn on another's Agent.

What `apply_speedups()` changes, and why each change is safe
-----------------------------------------------------------
* `nested_task_runs=False` (default): the six methods above are replaced by the plain
  functions the decorator wrapped (`Task.fn`), so they run as ordinary methods, in the
  caller's Prefect task run. The bodies are ControlFlow's own, unchanged: same events, same
  handlers, same tool execution, same results; only the Prefect task-run wrapper goes.
  Nothing in ControlFlow relies on those runs (they use `cache_policy=NONE`, no retries,
  no result persistence). What remains: the Prefect task run Foreman creates for each
  sub-task (what the UI shows), its state, logs and events; the Foreman audit log (written
  by the tool wrappers, not by Prefect); ControlFlow's event handlers.
  *What you lose:* the "Run agent orchestrator", "Call LLM" and "Tool call: X" task runs
  nested under each sub-task in the Prefect UI, with their own states and tracebacks.
  Tool calls and model replies still appear in the sub-task's run log, written by
  `foreman.cf_adapter.taskrun.RunLogHandler` ("agent calls tool(args)", "tool X returned: ...",
  "tool X refused or failed: ..."), and every call of a Foreman tool in the audit log.
  Two side effects: `TaskRunContext` / `get_run_logger()` inside a tool now give the
  sub-task's run, and `print()` inside tools follows the sub-task's `log_prints`
  (ControlFlow's nested runs forced `log_prints=False`).
* `artifacts=False` (default): ControlFlow's `create_markdown_artifact` calls (one per model
  reply, one per tool call; each a blocking HTTP request to the Prefect API) become no-ops.
  *What you lose:* the "agent-message" and "tool-result" markdown artifacts in the UI, i.e.
  the full reply payload (JSON) and the untruncated tool result. The run log keeps the
  reply text, tool calls and results cut to 300-500 characters (`RunLogHandler`, which
  `run_task` installs; a bare `Task.run()` has no such handler), the audit log keeps
  every Foreman tool call with its arguments and a result summary.

* `flow_heartbeat_join=False` (default): Prefect 3.8's sync flow engine joins its heartbeat
  thread when a flow run ends, and that thread sleeps in whole seconds, so every flow
  run's wall time is rounded up to the next second after its start (a 1.1 s flow took
  2.0 s; part of why 8 one-second sub-tasks took 2.3 s as a whole flow). We make the
  sync engine do what Prefect's own async engine does
  (`_send_heartbeats(engine, join_on_exit=False)`): the stop signal is still set, the
  daemon thread still exits within a second on its own and checks the run's final state
  before any heartbeat. Heartbeats while the flow runs (zombie detection) are unchanged.
  *What you lose:* nothing visible; at most, a heartbeat thread outlives its flow run by
  under a second.

The first two are monkeypatches because ControlFlow 0.12.1 has no setting for either
(`controlflow/settings.py` has none about Prefect tasks or artifacts, and
`controlflow.utilities.prefect.prefect_task` is applied at import time, so changing it
later has no effect; the decorated objects themselves must be replaced). The third has no
Prefect setting either (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` only sets the interval, at
least 30 s, and cannot be unset from the environment; the wait comes from the thread's
fixed 1 s sleep). All three are applied process-wide, at class/module level;
`apply_speedups(nested_task_runs=True, artifacts=True, flow_heartbeat_join=True)` restores
the stock behaviour exactly. If ControlFlow or Prefect change shape (other versions), the
affected cut is skipped with a warning rather than guessed.

Use: call `apply_speedups()` once per process, before sub-tasks run, from a module that
already imports ControlFlow (e.g. `foreman.cf_adapter.taskrun` or the planner flow), not from
`foreman/__init__` (this module imports ControlFlow, which takes seconds).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
import warnings
from typing import Any

import controlflow  # noqa: F401  (ControlFlow's modules must exist before we patch them)

logger = logging.getLogger("foreman.cf_adapter.speedups")

# (module, class, attribute): the methods ControlFlow decorated with `prefect_task`.
NESTED_TASK_METHODS: tuple[tuple[str, str, str], ...] = (
    ("controlflow.orchestration.orchestrator", "Orchestrator", "_run"),
    ("controlflow.orchestration.orchestrator", "Orchestrator", "_run_async"),
    ("controlflow.agents.agent", "Agent", "_run_model"),
    ("controlflow.agents.agent", "Agent", "_run_model_async"),
    ("controlflow.tools.tools", "Tool", "run"),
    ("controlflow.tools.tools", "Tool", "run_async"),
)

# Modules that imported `create_markdown_artifact` by name and call it per reply / tool call.
ARTIFACT_MODULES: tuple[str, ...] = ("controlflow.agents.agent", "controlflow.tools.tools")

_lock = threading.Lock()
_original_methods: dict[tuple[str, str, str], Any] = {}
_original_artifact_fns: dict[str, Any] = {}
_original_send_heartbeats: list[Any] = []


def _no_artifact(*args: Any, **kwargs: Any) -> None:
    """Stands in for ControlFlow's `create_markdown_artifact` (see `apply_speedups`)."""


def _set_nested_task_runs(enabled: bool) -> None:
    from prefect.tasks import Task as PrefectTask

    for key in NESTED_TASK_METHODS:
        module_name, class_name, attr = key
        cls = getattr(importlib.import_module(module_name), class_name)
        current = cls.__dict__.get(attr)
        if enabled:
            if key in _original_methods:
                setattr(cls, attr, _original_methods.pop(key))
            continue
        if key in _original_methods:
            continue  # already unwrapped
        if not isinstance(current, PrefectTask) or not callable(getattr(current, "fn", None)):
            warnings.warn(
                f"foreman.cf_adapter.speedups: {class_name}.{attr} is not a Prefect task in this "
                f"ControlFlow version; left as it is",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        _original_methods[key] = current
        # A plain function in the class dict binds `self` like any method.
        setattr(cls, attr, current.fn)


def _set_artifacts(enabled: bool) -> None:
    for module_name in ARTIFACT_MODULES:
        module = importlib.import_module(module_name)
        if enabled:
            if module_name in _original_artifact_fns:
                module.create_markdown_artifact = _original_artifact_fns.pop(module_name)
            continue
        if module_name in _original_artifact_fns:
            continue
        if not hasattr(module, "create_markdown_artifact"):
            warnings.warn(
                f"foreman.cf_adapter.speedups: {module_name} has no create_markdown_artifact in this "
                f"ControlFlow version; left as it is",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        _original_artifact_fns[module_name] = module.create_markdown_artifact
        module.create_markdown_artifact = _no_artifact


def _set_flow_heartbeat_join(enabled: bool) -> None:
    from prefect import flow_engine

    if enabled:
        if _original_send_heartbeats:
            flow_engine._send_heartbeats = _original_send_heartbeats.pop()
        return
    if _original_send_heartbeats:
        return
    original = getattr(flow_engine, "_send_heartbeats", None)
    try:
        parameters = inspect.signature(original).parameters if original is not None else {}
        accepts_flag = "join_on_exit" in parameters
    except (TypeError, ValueError):
        accepts_flag = False
    if not accepts_flag:
        warnings.warn(
            "foreman.cf_adapter.speedups: prefect.flow_engine._send_heartbeats has changed shape in this "
            "Prefect version; flow runs keep waiting for their heartbeat thread",
            RuntimeWarning,
            stacklevel=3,
        )
        return

    @functools.wraps(original)
    def send_heartbeats_without_join(engine: Any, join_on_exit: bool = True) -> Any:
        return original(engine, join_on_exit=False)

    _original_send_heartbeats.append(original)
    flow_engine._send_heartbeats = send_heartbeats_without_join


def apply_speedups(
    *,
    nested_task_runs: bool = False,
    artifacts: bool = False,
    flow_heartbeat_join: bool = False,
) -> None:
    """Make ControlFlow's and Prefect's per-run bookkeeping match the flags. Idempotent.

    `nested_task_runs=False` removes ControlFlow's "Run agent orchestrator", "Call LLM" and
    "Tool call: X" Prefect task runs (the work runs inside the caller's task run; tool calls
    show as log lines of that run). `artifacts=False` stops the per-reply and per-tool-call
    markdown artifacts. `flow_heartbeat_join=False` stops each flow run from waiting up to
    a second for its heartbeat thread at the end. Passing True for all three restores the
    stock behaviour. Call it before runs start (it patches process-wide, not per run).
    """
    with _lock:
        _set_nested_task_runs(nested_task_runs)
        _set_artifacts(artifacts)
        _set_flow_heartbeat_join(flow_heartbeat_join)
    logger.debug(
        "speedups: nested task runs %s, artifacts %s, flow heartbeat join %s",
        "on" if nested_task_runs else "off",
        "on" if artifacts else "off",
        "on" if flow_heartbeat_join else "off",
    )


def speedups_state() -> dict[str, bool]:
    """Which cuts are in effect: True means that ControlFlow feature is switched off."""
    return {
        "nested_task_runs_off": bool(_original_methods),
        "artifacts_off": bool(_original_artifact_fns),
        "flow_heartbeat_join_off": bool(_original_send_heartbeats),
    }
