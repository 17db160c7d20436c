"""Plan and run (Level 7): an objective becomes a validated sub-task graph that runs on Prefect.

The planner agent writes the plan; the validator checks it (repairs go back to the
planner); the engine runs ready sub-tasks in parallel, retries, replans when a step
fails for good, stays within budgets, and keeps finished results so a re-run resumes.
Every step is explained as Prefect artifacts, progress is told from the first second
(planning included), and the answer is an artifact and the flow run's persisted result.

Files attached to a run (`files`) are read first, before anything else runs, so a bad file
or an image the model cannot see stops the run at once. Then the planner is told which
files there are and what they hold, every agent step is given them (`SubTask.files`: a
vision model gets the images), the fast path answers from their text, citing each file by
name, and the answer ends with the notes on how they were read (OCR, transcripts).
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

import time
from contextvars import ContextVar
from typing import Any, Literal

import controlflow as cf
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field

from foreman.agents.models import build_chat_model, describe_model, uses_embedded_model
from foreman.agents.planner import Planner, PlanningOutcome
from foreman.agents.registry import registry
from foreman.cf_adapter.taskrun import run_task
from foreman.engine.answer import GroundedAnswer, answer_from_passages, fast_path_report, style_for
from foreman.engine.attachments import Attachments, prepare_attachments
from foreman.engine.cf_runner import build_scope
from foreman.engine.chain import ChainAnswer, answer_chained, chain_plan
from foreman.engine.compute import CodeAnswer, answer_with_code, code_plan
from foreman.engine.executor import ReplanRequest
from foreman.engine.explain import ProgressArtifact, write_answer, write_attachments, write_query
from foreman.engine.grounding import ANSWER_RULE, PLANNER_RULE, Grounding, format_passages, ground
from foreman.engine.plan import Plan
from foreman.engine.policy import RunPolicy, tool_env
from foreman.engine.progress import Progress, listening, publish
from foreman.engine.query import QueryAnswer, answer_with_query, query_plan
from foreman.engine.records import Budgets, RunReport, RunStatus, one_step_report
from foreman.engine.routing import Route, route, write_request
from foreman.engine.runs import (
    PlanRunResult,
    execute_plan,
    finish,
    not_run_reasons,
    result_of,
    run_key_for,
)
from foreman.engine.store import RunStore, run_store
from foreman.engine.task_runners import task_runner
from foreman.engine.validate import PlanScope, ValidPlan, validate_plan
from foreman.errors import PolicyError, QueryFailed, TaskNotCompleted
from foreman.flows.approval import approver_for
from foreman.flows.forms import offer_form
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import Settings, get_settings
from foreman.tools.catalog import ToolEnv, build_tool
from foreman.tools.code import data_binds, data_paths
from foreman.tools.knowledge.service import require_bases

_planning_calls: ContextVar[BaseCallbackHandler | None] = ContextVar("foreman_planning_calls", default=None)
register_configure_hook(_planning_calls, inheritable=True)  # LangChain adds it to every model call


class PlanningCalls(BaseCallbackHandler):
    """Counts the planner's model calls as they start, for the progress artifact and status line."""

    def __init__(self, limit: int, run_id: str | None) -> None:
        self.limit = limit
        self.run_id = run_id
        self.calls = 0

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.calls += 1
        publish(Progress(phase="planning", text=f"planning: model call {self.calls} of at most {self.limit}",
                         percent=0.0, run_id=self.run_id))


def make_planner(scope: PlanScope, settings: Settings, env: ToolEnv) -> Planner:
    """The embedded model writes plans under the strict schema, where invalid plans cannot be written."""
    local = uses_embedded_model(settings)
    return Planner(scope, registry, build_chat_model(settings), env.audit, strict=local,
                   max_llm_calls=2 if local else 4)


def plan_objective(objective: str, *, allowed_tools: list[str] | None = None, allow_write: bool = False,
                   allow_code: bool = False, workspace: str | None = None, grounded: bool = True,
                   files: list[str] | None = None) -> PlanningOutcome:
    """Plan without running (what `foreman plan` shows): the planner sees what grounding found,
    and the attached `files`, as in a run. (A question the passages answer would not be planned
    by `plan_and_run`.) The plan's agent steps list the files, as a run's do."""
    settings = get_settings()
    policy = RunPolicy.build(settings=settings, workspace=workspace, allowed_tools=allowed_tools,
                             allow_write=allow_write, allow_code=allow_code)
    attached = prepare_attachments(files, settings=settings, workspace=policy.workspace) if files else None
    env = tool_env(policy, settings)
    scope = build_scope(registry, policy)
    lessons = run_store().similar_runs(objective)
    planner = make_planner(scope, settings, env)
    found = ground(objective, policy, settings=settings) if grounded else None
    token = _planning_calls.set(PlanningCalls(planner.max_llm_calls * (1 + planner.max_repairs), None))
    try:
        outcome = planner.plan(objective, lessons=lessons, passages=planner_passages(found, attached))
    finally:
        _planning_calls.reset(token)
    if not files:
        return outcome
    return outcome.model_copy(update={"valid": outcome.valid.model_copy(
        update={"plan": with_files(outcome.valid.plan, files)})})


def planner_passages(found: Grounding | None, attached: Attachments | None) -> str | None:
    """What the planner is told before it plans: the attached files, then the passages found."""
    parts = [attached.planner_context() if attached is not None else "",
             format_passages(found, rule=PLANNER_RULE) if found is not None else ""]
    return "\n\n".join(p for p in parts if p) or None


def with_files(plan: Plan, files: list[str] | None) -> Plan:
    """`plan` with the run's files given to every agent step (scripts read their own input)."""
    if not files:
        return plan
    tasks = [t if t.script is not None else t.model_copy(update={"files": list(dict.fromkeys([*files, *t.files]))})
             for t in plan.tasks]
    return plan.model_copy(update={"tasks": tasks})


def with_attachments(grounding: Grounding | None, attached: Attachments | None, objective: str) -> Grounding | None:
    """The grounding with the attached files' best-matching blocks first: the person gave them for this."""
    if attached is None or not attached.files:
        return grounding
    base = grounding if grounding is not None else Grounding(query=objective)
    return base.model_copy(update={"passages": attached.passages(objective) + base.passages})


def synthesize(objective: str, report: RunReport, settings: Settings, env: ToolEnv,
               grounding: Grounding | None = None) -> str:
    """One writer turn turns the sub-task results into the answer; without results, say what happened.

    With grounding, the writer also gets the passages found for the objective and the rule to
    answer only from them and the results."""
    if not report.results:
        return f"No sub-task completed ({report.stopped_by or 'nothing ran'})."
    agent = cf.Agent(name="writer", instructions=registry.get("writer").instructions,
                     model=build_chat_model(settings, registry.get("writer").model), tools=[])
    context: dict[str, Any] = {"results": report.results}
    if grounding:
        context["passages"] = format_passages(grounding, rule=ANSWER_RULE)
    task = cf.Task(f"Answer the objective from these results: {objective}", name="answer",
                   result_type=str, context=context, agents=[agent])
    try:
        return run_task(task, audit=env.audit, max_llm_calls=3)
    except TaskNotCompleted:
        # the answer step must not lose the results: fall back to listing them
        return "\n".join(f"{k}: {v}" for k, v in report.results.items())


class PlannerForm(BaseModel):
    """The plan-and-run deployment's form: what a person starting a run from the UI may set.

    `plan`, `resume` and `approve_in` stay Python-only: a worker has no terminal to answer on,
    and a run key or a whole plan is not something to type into a form."""

    objective: str = Field(title="Objective", description="What you want done, in plain words.")
    workspace: str | None = Field(default=None, title="Workspace folder",
                                  description="The folder the agents' file tools work in (default: FOREMAN_WORKSPACE).")
    allowed_tools: list[str] | None = Field(default=None, title="Allowed tools",
                                            description="Only these tools (default: every read-only tool).")
    allow_write: bool = Field(default=False, title="Allow writing files",
                              description="Let steps write files in the workspace.")
    allow_code: bool = Field(default=False, title="Allow running Python",
                             description="Let steps run Python in the sandbox.")
    max_llm_calls: int = Field(default=60, title="Model-call budget", description="For the whole run.")
    max_tokens: int = Field(default=400_000, title="Token budget", description="For the whole run.")
    max_wall_s: float = Field(default=1800.0, title="Time budget (s)", description="Wall time for the whole run.")
    max_replans: int = Field(default=2, title="Revisions", description="How often the planner may revise the plan.")
    max_concurrency: int = Field(default=4, title="Steps at once", description="Steps running at the same time.")
    approval_timeout_s: int = Field(default=3600, title="Approval timeout (s)",
                                    description="How long an approval point waits before its default applies.")
    ground: bool = Field(default=True, title="Ground in the knowledge base",
                         description="Find passages in the workspace's index before any model call.")
    knowledge_bases: list[str] | None = Field(default=None, title="More knowledge bases",
                                              description="Ingested bases to search besides the workspace's own.")
    files: list[str] | None = Field(default=None, title="Attached files",
                                    description="Workspace paths or URLs on the allowed hosts (PDF, image, audio, "
                                                "text), given to the planner and every step.")


@flow(name="plan-and-run", task_runner=task_runner(), log_prints=True,
      persist_result=True, **FAILURE_HOOKS)
def plan_and_run(
    objective: str,
    workspace: str | None = None,
    allowed_tools: list[str] | None = None,
    allow_write: bool = False,
    allow_code: bool = False,
    max_llm_calls: int = 60,
    max_tokens: int = 400_000,
    max_wall_s: float = 1800.0,
    max_replans: int = 2,
    max_concurrency: int = 4,
    resume: str | None = None,
    plan: Plan | None = None,
    approval_timeout_s: int = 3600,
    approve_in: Literal["ui", "terminal"] = "ui",
    ground: bool = True,
    knowledge_bases: list[str] | None = None,
    files: list[str] | None = None,
) -> PlanRunResult:
    """Plan `objective` into sub-tasks and run them; return the synthesized answer.

    First the workspace's index is brought up to date and searched (`ground`): a question the
    passages answer gets one grounded model call (the fast path); otherwise the planner, each
    agent step and the answer are given the passages for what they do. `knowledge_bases`:
    ingested bases searched besides the workspace's own (an unknown one is refused). `files`:
    workspace paths or URLs on the allowed hosts, read before anything else (a bad one fails the
    run before it plans), shown to the planner, given to every agent step and the fast path.

    A run that ends FAILED raises `RunFailed` (its `.result` keeps what finished).
    `resume` re-runs an earlier run (its run key) without redoing finished sub-tasks.
    `plan` skips planning and runs the given plan (the same format workflow files use).
    """
    run_id = str(FlowRunContext.get().flow_run.id)
    with listening(ProgressArtifact(run_id, "planning")):
        return _plan_and_run(objective, run_id, workspace=workspace, allowed_tools=allowed_tools,
                             allow_write=allow_write, allow_code=allow_code, resume=resume, plan=plan,
                             approval_timeout_s=approval_timeout_s, approve_in=approve_in, grounded=ground,
                             knowledge_bases=knowledge_bases, files=files,
                             budgets=Budgets(max_llm_calls=max_llm_calls, max_tokens=max_tokens,
                                             max_wall_s=max_wall_s, max_replans=max_replans,
                                             max_concurrency=max_concurrency))


offer_form(plan_and_run, PlannerForm)


def _plan_and_run(objective: str, run_id: str, *, workspace: str | None, allowed_tools: list[str] | None,
                  allow_write: bool, allow_code: bool, resume: str | None, plan: Plan | None,
                  approval_timeout_s: int, approve_in: str, grounded: bool, knowledge_bases: list[str] | None,
                  budgets: Budgets, files: list[str] | None = None) -> Any:
    log = get_run_logger()
    settings = get_settings()
    log.info(describe_model(settings))
    started = time.time()
    policy = RunPolicy.build(settings=settings, workspace=workspace, allowed_tools=allowed_tools,
                             allow_write=allow_write, allow_code=allow_code)
    if knowledge_bases:
        policy = policy.with_bases(require_bases(knowledge_bases, settings))
    attached = attach_step(files, policy, settings, run_id) if files else None  # before anything else runs
    env = tool_env(policy, settings)
    scope = build_scope(registry, policy)
    store = run_store()
    run_key = run_key_for(resume, run_id, store)
    owner = run_owner()
    if owner is not None:
        store.set_owner(run_key, owner)
    planner = make_planner(scope, settings, env)
    fresh = plan is None and store.stored_plan(run_key) is None
    found = grounding_step(objective, policy, settings, run_id) if grounded else None
    grounding = with_attachments(found, attached, objective)
    decided = route_with_files(objective, grounding, attached) if grounding is not None and fresh else None
    if decided is not None:  # (a given plan runs as given)
        log.info("route: %s (%s)", decided.kind, decided.reason)
    if grounding is not None and decided is not None and decided.kind == "chain":
        chained = _chain_step(objective, grounding, policy, settings)
        if chained is not None:
            return _record_computed(objective, run_key, decided, chained, chain_plan(objective, decided, chained),
                                    store, started, attached)
        decided = route(objective, grounding, chain=False)
        log.info("route: %s (%s; the question did not split in two)", decided.kind, decided.reason)
    if grounding is not None and decided is not None and decided.kind in ("query", "code"):
        step = _query_step if decided.kind == "query" else _code_step
        computed = step(objective, grounding, decided, policy, settings, env)
        if not isinstance(computed, str):
            plan_of = query_plan if decided.kind == "query" else code_plan
            return _record_computed(objective, run_key, decided, computed, plan_of(objective, decided, computed),
                                    store, started, attached)
        decided = fallback_route(objective, grounding, decided, computed)
        log.info("route: %s (%s)", decided.kind, decided.reason)
    if grounding is not None and decided is not None and decided.kind == "lookup":
        return _answer_directly(objective, run_key, grounding, decided, settings, store, started, attached)

    passages = planner_passages(found, attached)
    valid, repaired = planning(objective, plan, run_key, store, planner, scope, run_id, passages, owner)
    if files:
        valid = valid.model_copy(update={"plan": with_files(valid.plan, files)})
    log.info("plan: %s", " | ".join(f"{t.id}<-{','.join(t.depends_on) or '-'}" for t in valid.plan.tasks))
    store.record_run(run_key, objective, RunStatus.RUNNING.value, None, valid.plan.model_dump(mode="json"), [],
                     started, 0.0, "running")

    report = execute_plan(valid, run_key, policy=policy, env=env, scope=scope, agents=registry, settings=settings,
                          store=store, budgets=budgets, replanner=replanner_with_files(planner, files),
                          approver=approver_for(approve_in, env.audit, approval_timeout_s),
                          grounded_objective=objective if grounded else None)
    report = unwritten_file_fails(objective, report, policy, started)

    publish(Progress(phase="answering", text="writing the answer", percent=100.0))
    answer = synthesize(objective, report, settings, env, grounding)
    answer = attached.with_notes(answer) if attached is not None else answer
    sources = (grounding.sources if grounding else []) + [s for found in report.sources.values() for s in found]
    write_answer(objective, answer, list(dict.fromkeys(sources)))
    log.info("answer (in full: the run's \"answer\" artifact): %s", answer[:500] + ("…" if len(answer) > 500 else ""))
    summary = _summary(report)
    store.record_run(run_key, objective, report.status.value, report.stopped_by,
                     report.plan.model_dump(mode="json"),
                     [r.model_dump(mode="json") for r in report.revisions], started, time.time() - started, summary)
    result = result_of(report, objective=objective, answer=answer, started=started, repaired_plan=repaired,
                       sources=sources, route=f"{decided.kind}: {decided.reason}" if decided else None)
    publish(Progress(phase="done", text=f"{result.status.value}", percent=100.0))
    return finish(result, not_run_reasons(report))


def attach_step(files: list[str], policy: RunPolicy, settings: Settings, run_id: str) -> Attachments:
    """The attached files read, as a task run of its own ("attach" in the UI), with an
    "attachments" artifact listing each file and how it was read. A bad file fails it,
    and the run, before any search, plan or step."""

    @task(name="attach", task_run_name="attach files", cache_policy=NO_CACHE, persist_result=False)
    def attach() -> Attachments:
        attached = prepare_attachments(files, settings=settings, workspace=policy.workspace)
        get_run_logger().info("attached: %s", "; ".join(
            f"{f.name} ({f.kind}, {'+'.join(f.methods)})" for f in attached.files))
        write_attachments(attached.markdown(), ", ".join(f.name for f in attached.files))
        return attached

    publish(Progress(phase="planning", text="reading the attached files", percent=0.0, run_id=run_id))
    return attach()


def route_with_files(objective: str, grounding: Grounding, attached: Attachments | None) -> Route:
    """`route`, except that an attached image for a vision model (or a PDF page without text,
    drawn for it) needs a step that looks at it: the fast path's one call takes text only."""
    unread = [f.name for f in attached.files if f.images and (f.kind == "image" or "(no text on this page)" in f.text)
              ] if attached is not None else []
    if unread:
        return Route(kind="plan", reason=f"{', '.join(unread)} must be looked at, by a step")
    return route(objective, grounding)


def replanner_with_files(planner: Planner, files: list[str] | None) -> Any:
    """The planner's revisions, their agent steps given the run's files like the first plan's."""
    if not files:
        return planner.replan

    def replan(request: ReplanRequest) -> Plan:
        return with_files(planner.replan(request), files)

    return replan


def grounding_step(objective: str, policy: RunPolicy, settings: Settings, run_id: str) -> Grounding:
    """Grounding as a task run of its own ("ground" in the UI): the workspace index refreshed,
    then the passages for the objective, before any model call."""

    @task(name="ground", task_run_name="ground", cache_policy=NO_CACHE, persist_result=False)
    def ground_objective() -> Grounding:
        found = ground(objective, policy, settings=settings)
        if found.indexed is not None:
            get_run_logger().info("index: %s", found.indexed.summary())
        get_run_logger().info("passages: %s", ", ".join(found.sources) or "none")
        return found

    publish(Progress(phase="planning", text="searching the knowledge base", percent=0.0, run_id=run_id))
    return ground_objective()


def _answer_directly(objective: str, run_key: str, grounding: Grounding, decided: Route, settings: Settings,
                     store: RunStore, started: float, attached: Attachments | None = None) -> Any:
    """The fast path: one grounded model call answers the question; the run is recorded like any other."""

    @task(name="answer", task_run_name="answer", cache_policy=NO_CACHE, persist_result=False)
    def answer() -> GroundedAnswer:
        return answer_from_passages(objective, grounding, build_chat_model(settings), style=style_for(settings))

    publish(Progress(phase="answering", text="answering from the passages", percent=50.0))
    answered = answer()
    report = fast_path_report(objective, run_key, decided, answered, started)
    text = attached.with_notes(answered.text) if attached is not None else answered.text
    write_answer(objective, text, answered.sources)
    get_run_logger().info("answer: %s", answered.answer[:500])
    store.record_run(run_key, objective, report.status.value, None, report.plan.model_dump(mode="json"), [],
                     started, time.time() - started, _summary(report))
    result = result_of(report, objective=objective, answer=text, started=started,
                       sources=answered.sources, route=f"{decided.kind}: {decided.reason}")
    publish(Progress(phase="done", text=f"{result.status.value}", percent=100.0))
    return finish(result)


def _query_step(objective: str, grounding: Grounding, decided: Route, policy: RunPolicy, settings: Settings,
                env: ToolEnv) -> QueryAnswer | str:
    """The query route as a task run of its own ("query" in the UI): one SELECT written by the
    model, checked and run by Python, the rows written to a file when asked. Returns the answer,
    or why no query could answer (the run then looks up or plans instead). A write the run was
    not allowed is refused here, before the model is asked anything."""
    if decided.write is not None and not policy.allow_write:
        raise PolicyError(f"this asks to write {decided.write.path}; run it again with --allow-write "
                          f"(allow_write=True) to let Foreman write files in {policy.workspace}")

    @task(name="query", task_run_name="query", cache_policy=NO_CACHE, persist_result=False)
    def query() -> QueryAnswer | str:
        writer = build_tool("write_file", env) if decided.write is not None else None
        try:
            answered = answer_with_query(objective, grounding.tables, build_chat_model(settings),
                                         tables=[t.name for t in decided.tables], write=decided.write,
                                         write_file=writer, rows_required=decided.rows_required)
        except QueryFailed as exc:
            get_run_logger().warning("no query answered: %s", exc)
            return str(exc)
        get_run_logger().info("query (%d call(s)): %s", answered.calls, answered.sql)
        write_query(answered)
        return answered

    publish(Progress(phase="answering", text="querying the workspace's tables", percent=50.0))
    return query()


def _chain_step(objective: str, grounding: Grounding, policy: RunPolicy, settings: Settings) -> ChainAnswer | None:
    """Two facts chained, as a task run ("chain" in the UI): the split, then each half by its own
    route, each half's passages found for it alone. None when the question did not split or a
    half found nothing."""

    def ground_half(question: str) -> Grounding:
        return ground(question, policy, settings=settings, refresh=False).model_copy(
            update={"tables": grounding.tables})

    @task(name="chain", task_run_name="chain", cache_policy=NO_CACHE, persist_result=False)
    def chain() -> ChainAnswer | None:
        answered = answer_chained(objective, ground_half, build_chat_model(settings), style=style_for(settings))
        if answered is None:
            get_run_logger().info("the question did not split into two facts")
            return None
        for hop in answered.hops:
            get_run_logger().info("hop (%s): %s -> %s", hop.route, hop.question, hop.value[:200])
        return answered

    publish(Progress(phase="answering", text="finding one fact, then the other", percent=50.0))
    return chain()


def _code_step(objective: str, grounding: Grounding, decided: Route, policy: RunPolicy, settings: Settings,
               env: ToolEnv) -> CodeAnswer | str:
    """The code route as a task run ("compute" in the UI): one script over the tables as CSV, run
    by the audited run_python tool with the workspace read-only. Refused before any model call
    when the run may not run code."""
    if not policy.allow_code:
        raise PolicyError("this asks for Python to be run; run it again with --allow-code (allow_code=True) "
                          "to let Foreman run code in its sandbox")

    @task(name="compute", task_run_name="compute", cache_policy=NO_CACHE, persist_result=False)
    def compute() -> CodeAnswer | str:
        _, tables_folder = data_paths(data_binds(policy.workspace))
        try:
            answered = answer_with_code(objective, grounding.tables, build_chat_model(settings),
                                        build_tool("run_python", env), tables=[t.name for t in decided.tables],
                                        tables_folder=tables_folder)
        except QueryFailed as exc:
            get_run_logger().warning("no script answered: %s", exc)
            return str(exc)
        get_run_logger().info("script (%d call(s)) printed: %s", answered.calls, answered.answer[:300])
        return answered

    publish(Progress(phase="answering", text="computing with Python over the workspace's tables", percent=50.0))
    return compute()


def unwritten_file_fails(objective: str, report: RunReport, policy: RunPolicy, started: float) -> RunReport:
    """A plan whose objective names a file to write, and which wrote no such file, did not do what
    was asked: it ends FAILED, whatever its steps reported."""
    asked = write_request(objective)
    if asked is None or report.status != RunStatus.COMPLETED:
        return report
    target = policy.workspace / asked.path
    if target.is_file() and target.stat().st_mtime >= started - 1:
        return report
    return report.model_copy(update={"status": RunStatus.FAILED,
                                     "stopped_by": f"the objective asks for {asked.path}, and no step wrote it"})


def fallback_route(objective: str, grounding: Grounding, decided: Route, why: str) -> Route:
    """Where a question goes when no query answered it: the lookup when passages were found, else
    the planner; a write request always to the planner, whose steps have the write tool. A request
    for Python that no script answered fails the run: a lookup is not what was asked, and the
    planner's steps would write the same script with less to go on."""
    if decided.kind == "code":
        raise TaskNotCompleted("compute", "FAILED", f"no Python script answered: {why[:600]}")
    kind = "lookup" if grounding.passages and decided.write is None else "plan"
    return Route(kind=kind, reason=f"{decided.reason}; no query answered ({why[:200]}), so {kind}")


def _record_computed(objective: str, run_key: str, decided: Route, answered: QueryAnswer | CodeAnswer | ChainAnswer, plan: Plan,
                     store: RunStore, started: float, attached: Attachments | None) -> Any:
    """A query- or code-route run recorded like any other: answer artifact, run store, result."""
    text = attached.with_notes(answered.text) if attached is not None else answered.text
    write_answer(objective, text, answered.sources)
    get_run_logger().info("answer: %s", answered.answer[:500])
    attempts = len(getattr(answered, "refusals", None) or getattr(answered, "errors", None) or []) + 1
    report = one_step_report(run_key, plan, text=answered.text, calls=answered.calls, tokens=answered.tokens,
                             sources=answered.sources, started=started, attempts=attempts)
    store.record_run(run_key, objective, report.status.value, None, report.plan.model_dump(mode="json"), [],
                     started, time.time() - started, _summary(report))
    result = result_of(report, objective=objective, answer=text, started=started,
                       sources=answered.sources, route=f"{decided.kind}: {decided.reason}")
    publish(Progress(phase="done", text=f"{result.status.value}", percent=100.0))
    return finish(result)


def planning(objective: str, given: Plan | None, run_key: str, store: RunStore, planner: Planner,
             scope: PlanScope, run_id: str, passages: str | None = None,
             owner: str | None = None) -> tuple[ValidPlan, bool]:
    """Planning as a task run of its own, so the UI shows a running "plan" from the first second,
    and its model calls as they start ("planning: model call 1 of at most 6")."""
    calls = PlanningCalls(planner.max_llm_calls * (1 + planner.max_repairs), run_id)

    @task(name="plan", task_run_name="plan", cache_policy=NO_CACHE, persist_result=False)
    def plan() -> tuple[ValidPlan, bool]:  # no parameters: Prefect must not walk the planner
        token = _planning_calls.set(calls)
        try:
            return _get_plan(objective, given, run_key, store, planner, scope, passages, owner)
        finally:
            _planning_calls.reset(token)

    publish(Progress(phase="planning", text="planning", percent=0.0, run_id=run_id))
    return plan()


def _get_plan(objective: str, given: Plan | None, run_key: str, store: RunStore, planner: Planner,
              scope: PlanScope, passages: str | None = None, owner: str | None = None) -> tuple[ValidPlan, bool]:
    if given is not None:
        return validate_plan(given.model_copy(update={"objective": given.objective or objective}), scope), False
    stored = store.stored_plan(run_key)
    if stored is not None:  # resuming: the same graph, so finished sub-tasks match
        return validate_plan(Plan.model_validate(stored), scope), False
    outcome = planner.plan(objective, lessons=store.similar_runs(objective, owner=owner), passages=passages)
    return outcome.valid, outcome.repaired


def run_owner() -> str | None:
    """The user a run was started for (its `user:NAME` tag, as a chat turn's `/plan` sets it), or None."""
    context = FlowRunContext.get()
    tags = context.flow_run.tags if context is not None and context.flow_run is not None else []
    return next((t.removeprefix("user:") for t in tags if t.startswith("user:")), None)


def _summary(report: RunReport) -> str:
    parts = [f"{i}={o.status.value}" + (f" ({o.error[:80]})" if o.error else "") for i, o in report.outcomes.items()]
    tail = f"; stopped by {report.stopped_by}" if report.stopped_by else ""
    return f"{report.status.value}: " + ", ".join(parts) + tail + f"; revisions={len(report.revisions)}"
