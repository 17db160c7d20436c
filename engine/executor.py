"""Run a validated plan on Prefect: ready sub-tasks in parallel, within budgets, adapting on failure.

The loop runs in the flow-run's thread and does only bookkeeping; each sub-task is a
Prefect task run (named after it, with its own retries, backoff and timeout) on the
flow's thread pool. Status machine, as in the seed's engine:
sub-task PENDING -> RUNNING -> COMPLETED | FAILED | SKIPPED (| REJECTED at an approval point);
run PENDING -> RUNNING (-> PAUSED while a person decides) -> COMPLETED | FAILED | CANCELLED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.futures import PrefectFuture
from prefect.tasks import exponential_backoff

from foreman.engine.conditions import ConditionError, parse_condition
from foreman.engine.plan import Plan, SubTask
from foreman.engine.records import (
    ApprovalAnswer,
    Attempts,
    Budgets,
    NodeOutcome,
    NodeResult,
    NodeStatus,
    ReplanRequest,
    Revision,
    RunReport,
    RunStatus,
    Usage,
)
from foreman.engine.store import RunStore
from foreman.engine.validate import PlanError, PlanInvalid, PlanScope, ValidPlan, validate_plan
from foreman.errors import is_retryable

POLL_S = 0.02


class NodeRunner(Protocol):
    """Runs one sub-task with one agent. The engine knows nothing of models or ControlFlow."""

    def choose_agent(self, sub: SubTask, tried: list[str]) -> str | None: ...

    def run(self, sub: SubTask, inputs: dict[str, Any], agent: str | None, max_llm_calls: int,
            usage: Usage) -> Any: ...


class Observer(Protocol):
    def on_plan(self, report: RunReport) -> None: ...
    def on_progress(self, report: RunReport) -> None: ...
    def on_revision(self, report: RunReport, revision: Revision) -> None: ...
    def on_finish(self, report: RunReport) -> None: ...


class NullObserver:
    def on_plan(self, report: RunReport) -> None: ...
    def on_progress(self, report: RunReport) -> None: ...
    def on_revision(self, report: RunReport, revision: Revision) -> None: ...
    def on_finish(self, report: RunReport) -> None: ...


Replanner = Callable[[ReplanRequest], Plan]


Approver = Callable[[SubTask, dict[str, Any]], ApprovalAnswer]


ATTEMPTS_ATTR = "foreman_attempts"  # on the exception that failed a node: its Attempts, pickled with it


@dataclass
class Running:
    future: PrefectFuture
    attempts: Attempts
    reserved_calls: int


def retry_unless_setup_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: a configuration or plan error fails the same way every time."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001  (whatever failed the attempt decides)
        return is_retryable(exc)
    return True


def subtask_task(runner: NodeRunner, ledger: dict[str, Attempts]) -> Any:
    """The Prefect task that runs one attempt at one sub-task, bound to this engine's runner and
    ledger by closure, so its arguments are plain data that nobody mutates.

    On threads the ledger is the engine's own; on Dask it is the worker's copy (the closure
    is pickled with the task), so the attempts also travel back: on the result, or on the
    exception of an attempt that failed (`ATTEMPTS_ATTR`)."""

    @task(name="run_subtask", cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=retry_unless_setup_error)
    def run_subtask(sub: SubTask, inputs: dict[str, Any], max_llm_calls: int) -> NodeResult:
        attempts = ledger[sub.id]
        agent = runner.choose_agent(sub, attempts.agents)
        attempts.tried.append(agent)
        try:
            value = runner.run(sub, inputs, agent, max_llm_calls, attempts.usage)
        except Exception as exc:  # re-raised as it is, carrying the counts
            with suppress(AttributeError):  # an exception type that takes no attributes: the ledger's copy
                setattr(exc, ATTEMPTS_ATTR, attempts.model_copy(deep=True))
            raise
        return NodeResult(value=value, agent=agent, attempts=attempts.model_copy(deep=True))

    return run_subtask


def reported_attempts(state: Any) -> Attempts | None:
    """The attempts a finished node's task reported where it ran (None: it reported none)."""
    try:
        value = state.result()
    except BaseException as exc:  # noqa: BLE001  (a failed attempt carries them on its exception)
        value = getattr(exc, ATTEMPTS_ATTR, None)
        return value if isinstance(value, Attempts) else None
    return value.attempts if isinstance(value, NodeResult) else None


def run_order(plan: Plan) -> list[str]:
    """A topological order that keeps the plan's own order where dependencies allow."""
    placed: list[str] = []
    todo = list(plan.tasks)
    while todo:
        ready = next((t for t in todo if all(d in placed or d not in plan.ids for d in t.depends_on)), todo[0])
        placed.append(ready.id)
        todo.remove(ready)
    return placed


def _ancestors(step_id: str, plan: Plan) -> set[str]:
    found: set[str] = set()
    todo = list(plan.task(step_id).depends_on)
    while todo:
        dep = todo.pop()
        if dep not in found and dep in plan.ids:
            found.add(dep)
            todo.extend(plan.task(dep).depends_on)
    return found


def approval_context(sub: SubTask, plan: Plan) -> list[str]:
    """The steps a person deciding on `sub` is shown, in order; the approval waits for all of them.

    Every step `sub` depends on (directly or not), and every earlier step that works on the
    same inputs (shares one of those ancestors): in the log pipeline, `upload` (after `redact`)
    waits for `summarize` (also after `redact`), so the approver reads the summary first.
    "Earlier" is a topological order, so two approval points never wait for each other."""
    order = run_order(plan)
    mine = _ancestors(sub.id, plan)
    earlier = order[:order.index(sub.id)]
    return [i for i in earlier if i in mine or mine & _ancestors(i, plan)]


def upstream_results(sub: SubTask, report: RunReport) -> dict[str, Any]:
    """Results of the steps in `sub`'s approval context that completed, in order: what a person
    deciding on `sub` should see (the step itself only receives its direct dependencies)."""
    return {i: report.outcomes[i].result for i in approval_context(sub, report.plan)
            if report.outcomes[i].status == NodeStatus.COMPLETED}


class Engine:
    """Runs plans. One engine per flow run; `run` is called from the flow-run's thread."""

    def __init__(
        self,
        runner: NodeRunner,
        scope: PlanScope,
        store: RunStore,
        budgets: Budgets | None = None,
        replanner: Replanner | None = None,
        approver: Approver | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.runner = runner
        self.scope = scope
        self.store = store
        self.budgets = budgets or Budgets()
        self.replanner = replanner
        self.approver = approver
        self.observer = observer or NullObserver()
        self._ledger: dict[str, Attempts] = {}
        self._run_subtask = subtask_task(runner, self._ledger)

    # --- the loop -----------------------------------------------------------------

    def run(self, valid: ValidPlan, run_key: str) -> RunReport:
        plan = valid.plan
        report = RunReport(
            run_key=run_key, objective=plan.objective, status=RunStatus.RUNNING, plan=plan,
            outcomes={t.id: NodeOutcome(id=t.id, title=t.title) for t in plan.tasks}, started=time.time(),
        )
        self._rejected_for_replan: list[str] = []
        self._reuse_finished(report)
        self.observer.on_plan(report)

        running: dict[str, Running] = {}
        replans = 0
        while True:
            stop = report.stopped_by or self._budget_exceeded(report, running)
            if stop and not report.stopped_by:
                report.stopped_by = stop
                self._skip_pending(report, f"not started: {stop}")
            if not report.stopped_by:
                for sub in self._ready(report, running):
                    if not self._start(sub, report, running):
                        break
                while self._rejected_for_replan:
                    replans = self._on_failure(self._rejected_for_replan.pop(0), report, replans)
            if not running:
                if report.stopped_by or not self._ready(report, running):
                    break
                continue
            # a poll, not wait(timeout=): Prefect's timeout uses SIGALRM, which a Dask client in the
            # process can trip (CancelledError out of wait); both future kinds answer done()
            done = {r.future for r in running.values() if r.future.wrapped_future.done()}
            if not done:
                time.sleep(POLL_S)
            for node_id in [i for i, r in running.items() if r.future in done]:
                finished = running.pop(node_id)
                failed_for_good = self._finish(node_id, finished, report)
                if failed_for_good:
                    replans = self._on_failure(node_id, report, replans)
            if done:
                self.observer.on_progress(report)

        self._close(report)
        return report

    def _reuse_finished(self, report: RunReport) -> None:
        finished = self.store.finished_results(report.run_key)
        for sub in report.plan.tasks:
            hit = finished.get((sub.id, sub.fingerprint()))
            if hit is not None:
                outcome = report.outcomes[sub.id]
                outcome.status, outcome.agent, outcome.result = NodeStatus.COMPLETED, hit.agent, hit.value
                outcome.reused, outcome.reason = True, "reused: finished in an earlier attempt of this run"

    def _ready(self, report: RunReport, running: dict) -> list[SubTask]:
        ready = []
        for sub in report.plan.tasks:
            outcome = report.outcomes[sub.id]
            if outcome.status != NodeStatus.PENDING or sub.id in running:
                continue
            waits_for = approval_context(sub, report.plan) if sub.approval else sub.depends_on
            if all(report.outcomes[d].status not in (NodeStatus.PENDING, NodeStatus.RUNNING) for d in waits_for):
                ready.append(sub)
        return ready

    def _start(self, sub: SubTask, report: RunReport, running: dict) -> bool:
        """Decide a ready sub-task: skip it, or submit it. False when nothing more may start now."""
        outcome = report.outcomes[sub.id]
        blocked = [d for d in sub.depends_on if report.outcomes[d].status != NodeStatus.COMPLETED]
        if blocked:
            outcome.status = NodeStatus.SKIPPED
            outcome.reason = f"upstream {', '.join(blocked)} did not complete"
            return True
        inputs = {d: report.outcomes[d].result for d in sub.depends_on}
        if sub.condition:
            try:
                go = parse_condition(sub.condition).evaluate(inputs)
            except ConditionError as exc:
                outcome.status, outcome.error = NodeStatus.FAILED, str(exc)
                self._stop_if_fail_fast(sub.id, str(exc), report)
                return True
            if not go:
                outcome.status, outcome.reason = NodeStatus.SKIPPED, f"condition false: {sub.condition}"
                return True
        if len(running) >= self.budgets.max_concurrency:
            return False
        calls = self._calls_available(report, running)
        if calls < 1:
            return False  # wait for running sub-tasks to hand back their reservations
        if sub.approval:
            answer = self._approve(sub, inputs, report)
            if answer is None:
                return True
            inputs = {**inputs, "_approval": answer.model_dump(include={"approved", "value", "comment", "decided_by"})}
        attempts = self._ledger[sub.id] = Attempts()
        reserved = min(sub.max_llm_calls, calls)
        options: dict[str, Any] = {
            "task_run_name": f"{sub.id}: {sub.title}"[:100],
            "retries": sub.retries,
            "timeout_seconds": sub.timeout_s,
        }
        if sub.retries:
            options["retry_delay_seconds"] = exponential_backoff(backoff_factor=sub.retry_backoff_s)(sub.retries) if sub.retry_backoff_s else 0
        future = self._run_subtask.with_options(**options).submit(sub, inputs, reserved)
        outcome.status, outcome.started = NodeStatus.RUNNING, time.time()
        running[sub.id] = Running(future=future, attempts=attempts, reserved_calls=reserved)
        return True

    def _approve(self, sub: SubTask, inputs: dict[str, Any], report: RunReport) -> ApprovalAnswer | None:
        """Ask a person; None when the step must not run (rejected, or no one can be asked)."""
        outcome = report.outcomes[sub.id]
        if self.approver is None:
            outcome.status = NodeStatus.FAILED
            outcome.error = "needs human approval, but this run has no approver; run it from a flow that can pause"
            self._stop_if_fail_fast(sub.id, outcome.error, report)
            return None
        report.status = RunStatus.PAUSED
        self.observer.on_progress(report)
        try:
            answer = self.approver(sub, upstream_results(sub, report))
        except Exception as exc:  # noqa: BLE001  (no one could be asked: the step must not run)
            report.status = RunStatus.RUNNING
            outcome.status = NodeStatus.FAILED
            outcome.error = f"could not ask for approval: {type(exc).__name__}: {exc}"
            self._record(report, sub.id)
            self._stop_if_fail_fast(sub.id, outcome.error, report)
            return None
        report.status = RunStatus.RUNNING
        if answer.approved:
            return answer
        why = ("no decision before the timeout (default: reject)" if answer.timed_out
               else "nobody answered (the run was resumed without an answer)" if not answer.answered
               else "rejected by a person")
        why += f": {answer.comment}" if answer.comment else ""
        if sub.on_reject == "skip":
            outcome.status, outcome.reason = NodeStatus.REJECTED, why
            self._record(report, sub.id)
        else:
            outcome.status, outcome.error = NodeStatus.FAILED, why
            self._record(report, sub.id)
            if sub.on_reject == "replan":
                self._rejected_for_replan.append(sub.id)
            else:
                self._stop_if_fail_fast(sub.id, why, report)
        return None

    def _finish(self, node_id: str, finished: Running, report: RunReport) -> bool:
        future = finished.future
        outcome = report.outcomes[node_id]
        outcome.finished = time.time()
        future.wait()  # sets the final state from the worker thread, not from the API's lagging copy
        state = future.state
        # where the node ran counted them: the same object on threads, the only count on Dask
        attempts = reported_attempts(state) or finished.attempts
        tried, usage = attempts.agents, attempts.usage
        outcome.attempts, outcome.agents_tried = len(attempts.tried), list(tried)
        outcome.llm_calls, outcome.tokens = usage.llm_calls, usage.tokens
        report.usage.llm_calls += usage.llm_calls
        report.usage.tokens += usage.tokens
        if state.is_completed():
            result: NodeResult = state.result()
            outcome.status, outcome.agent, outcome.result = NodeStatus.COMPLETED, result.agent, result.value
            sub = report.plan.task(node_id)
            self.store.save_result(report.run_key, node_id, sub.fingerprint(), result.agent, result.value)
            self._record(report, node_id)
            return False
        outcome.status = NodeStatus.FAILED
        outcome.agent = tried[-1] if tried else None
        outcome.error = _state_error(state)
        self._record(report, node_id)
        return True

    def _record(self, report: RunReport, node_id: str) -> None:
        o = report.outcomes[node_id]
        sub = report.plan.task(node_id)
        self.store.record_node(report.run_key, node_id, o.agent, sub.capability, o.status,
                               o.duration_s, o.attempts, o.error)

    def _on_failure(self, node_id: str, report: RunReport, replans: int) -> int:
        error = report.outcomes[node_id].error or "failed"
        while self.replanner is not None and replans < self.budgets.max_replans:
            replans += 1
            try:
                self._replan(node_id, error, report)
            except Exception as exc:  # noqa: BLE001  (a bad revision must not lose the run)
                report.revisions.append(Revision(after_failure_of=node_id, error=f"replan failed: {exc}", plan=report.plan))
                continue
            self.observer.on_revision(report, report.revisions[-1])
            return replans
        self._stop_if_fail_fast(node_id, error, report)
        return replans

    def _stop_if_fail_fast(self, node_id: str, error: str, report: RunReport) -> None:
        if report.plan.on_failure == "fail_fast" and not report.stopped_by:
            report.stopped_by = f"sub-task {node_id} failed: {error}"
            self._skip_pending(report, f"not started: run stopped after {node_id} failed")

    def _replan(self, node_id: str, error: str, report: RunReport) -> Plan:
        """Ask for a revised graph of the remaining work; finished sub-tasks stay as they are.

        Completed and skipped sub-tasks are kept and never redone; the failed one and
        everything not started may be replaced (a retry under the failed id is allowed).
        """
        request = ReplanRequest(objective=report.objective, plan=report.plan, finished=report.results,
                                failed=node_id, error=error)
        proposal = self.replanner(request)
        settled = {i for i, o in report.outcomes.items()
                   if o.status in (NodeStatus.COMPLETED, NodeStatus.SKIPPED, NodeStatus.REJECTED)}
        clashes = sorted(t.id for t in proposal.tasks if t.id in settled)
        if clashes:
            raise PlanInvalid([PlanError(task=c, field="id", message="this sub-task already finished; "
                                         "finished sub-tasks are never redone, use a new id") for c in clashes])
        kept = [t for t in report.plan.tasks if t.id in settled]
        merged = Plan(objective=report.plan.objective, rationale=proposal.rationale or report.plan.rationale,
                      tasks=kept + list(proposal.tasks), on_failure=report.plan.on_failure)
        merged = validate_plan(merged, self.scope).plan
        for sub in report.plan.tasks:
            if sub.id not in settled:
                report.outcomes.pop(sub.id, None)
        for sub in proposal.tasks:
            report.outcomes[sub.id] = NodeOutcome(id=sub.id, title=sub.title)
        report.plan = merged
        report.revisions.append(Revision(after_failure_of=node_id, error=error, plan=merged))
        return merged

    def _skip_pending(self, report: RunReport, reason: str) -> None:
        for outcome in report.outcomes.values():
            if outcome.status == NodeStatus.PENDING:
                outcome.status, outcome.reason = NodeStatus.SKIPPED, reason

    def _calls_available(self, report: RunReport, running: dict) -> int:
        reserved = sum(r.reserved_calls for r in running.values())
        return self.budgets.max_llm_calls - report.usage.llm_calls - reserved

    def _budget_exceeded(self, report: RunReport, running: dict) -> str | None:
        b, used = self.budgets, report.usage
        if time.time() - report.started >= b.max_wall_s:
            return f"budget max_wall_s={b.max_wall_s:g} reached"
        if used.tokens >= b.max_tokens:
            return f"budget max_tokens={b.max_tokens} reached ({used.tokens} used)"
        if not running and self._ready(report, running) and self._calls_available(report, running) < 1:
            return f"budget max_llm_calls={b.max_llm_calls} reached ({used.llm_calls} used)"
        return None

    def _close(self, report: RunReport) -> None:
        report.finished = time.time()
        statuses = {o.status for o in report.outcomes.values()}
        # "continue" decides what else runs, not the verdict: a step that failed for good (and was
        # not replaced by a revision) fails the run, so the UI, hooks and notifications say so.
        failed = report.stopped_by or NodeStatus.FAILED in statuses
        report.status = RunStatus.FAILED if failed else RunStatus.COMPLETED
        self.observer.on_finish(report)


def _state_error(state: Any) -> str:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001  (we want the message whatever it is)
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name
