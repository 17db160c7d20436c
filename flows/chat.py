"""Chat (Level 5): one conversation turn as a Prefect flow run, with the thread's history and the user's memories.

`chat-turn` takes the user, the thread and the message. The user is a parameter and a tag
on the flow run (`user:NAME`), and it is what the memory tools read: they take no user id,
so no message can reach another user's memory. The turn is one agent call with the thread's
history (recent turns verbatim, older ones summarized within FOREMAN_MEMORY_HISTORY_TOKENS)
and the user's facts recalled for the message, found by Python before the model is asked.
A bigger request goes to the planner: a message starting `/plan`, or the agent calling
`hand_to_planner`; the planner's answer is the turn's reply. Every few turns (and when a
chat ends) durable facts move from the thread into long-term memory.

Files given with a turn (`files`) are read before anything is stored, go into that turn only
(a user message in its flow: text, or images for a model that sees), and are kept in the
thread as "[attached NAME]", not their text: consolidation reads the thread, so a file's
text never becomes a long-term memory verbatim.

`forget-user` and `memory-list` are the same controls as `foreman memory` for the UI.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

from typing import Any

import controlflow as cf
from prefect import flow, get_run_logger, tags
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field

from foreman.agents.models import describe_model
from foreman.agents.registry import AgentRegistry, build_agent, registry
from foreman.cf_adapter.taskrun import private_flow, run_task
from foreman.engine.attachments import Attachments, prepare_attachments
from foreman.engine.policy import RunPolicy, permission_for, tool_env
from foreman.errors import ConfigurationError, ThreadRefused
from foreman.flows.forms import offer_form
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import get_settings
from foreman.tools.audit import AuditLog, AuditRecord, audit_log, current_context
from foreman.tools.catalog import GuardedTool, audited
from foreman.tools.memory.cf_memory import as_user
from foreman.tools.memory.consolidate import consolidate
from foreman.tools.memory.history import HistoryWindow, build_history, clip_tokens, count_tokens
from foreman.tools.memory.scope import check_user
from foreman.tools.memory.service import memory_store, recall
from foreman.tools.memory.store import Forgotten, MemoryStore, ThreadInfo

MEMORY_TOOLS = ["remember", "recall", "forget"]
PLAN_PREFIX = "/plan"
RECALL_K = 5
INSTRUCTIONS = (
    "You are in an ongoing conversation with the user {user}. The task's objective is their latest message: "
    "reply to it directly and briefly, as the next turn of the conversation so far, using what you remember "
    "about them. When they tell you a lasting fact or preference, call remember with it. When they ask for a "
    "bigger job (several steps, files to read or write), call hand_to_planner with that job, then reply that "
    "it was handed over."
)


class ChatTurnResult(BaseModel):
    """One turn: the reply and what it was based on."""

    user: str
    thread: str
    reply: str
    new_thread: bool = False
    history_tokens: int = Field(description="Tokens of history (summary + recent turns) the model was shown.")
    summarized_turns: int = Field(description="Turns of this thread folded into its summary so far.")
    memories: list[str] = Field(default_factory=list, description="Long-term facts recalled for this turn.")
    planner_run: str | None = Field(default=None, description="The plan-and-run flow run a bigger request went to.")
    consolidated: int = Field(default=0, description="Facts this turn moved into long-term memory.")
    attached: list[str] = Field(default_factory=list, description="Names of the files given with this turn.")


def tag_run(user: str) -> None:
    """Tag this flow run `user:NAME` (whoever started it: CLI, Python or a deployment)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    tag = f"user:{user}"
    if tag in (context.flow_run.tags or []):
        return
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, tags=[*(context.flow_run.tags or []), tag])


def refuse(audit: AuditLog, action: str, user: str, thread: str, error: Exception) -> None:
    """Record a refused thread access in the audit log, like a refused tool call."""
    audit.record(AuditRecord(**current_context().model_dump(), tool=action, arguments={"user": user, "thread": thread},
                             outcome="refused", detail=str(error)))


def open_thread(store: MemoryStore, audit: AuditLog, user: str, thread: str | None) -> tuple[ThreadInfo, bool]:
    """The user's thread (new when `thread` is None); another user's is refused and audited."""
    if thread is None:
        return store.create_thread(user), True
    try:
        return store.thread(user, thread), False
    except ThreadRefused as exc:
        refuse(audit, "chat-turn", user, thread, exc)
        raise


def context_for(window: HistoryWindow, memories: list[str]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if window.summary:
        context["summary of the earlier conversation"] = window.summary
    if window.turns:
        context["conversation so far"] = window.lines()
    if memories:
        context["what you remember about the user"] = memories
    return context


def handoff_tool(asked: list[str], audit: AuditLog) -> Any:
    """The agent's way to ask for the planner: it only records the request; the flow runs it."""

    def hand_to_planner(objective: str) -> str:
        """Hand a bigger job (several steps, files) to the planner; it runs after this reply."""
        asked.append(objective)
        return "handed to the planner; it runs after your reply and its answer is shown to the user"

    return GuardedTool.from_function(audited("hand_to_planner", hand_to_planner, audit), name="hand_to_planner")


def run_planner(user: str, objective: str, workspace: str | None, ground: bool,
                files: list[str] | None = None) -> tuple[str, str | None]:
    """Run the planner on `objective` as a subflow tagged with the user; (answer, its flow run id).

    The planner's run has no user: it cannot read or write anyone's memory. It gets the turn's files."""
    from foreman.flows.planner import plan_and_run

    with tags(f"user:{user}"):
        state = plan_and_run(objective=objective, workspace=workspace, ground=ground, files=files or None,
                             return_state=True)
    run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    try:
        result = state.result()
    except Exception as exc:  # noqa: BLE001  (the turn reports the planner's failure, it does not fail)
        return f"The planner could not finish it: {exc}", run_id
    return str(getattr(result, "answer", result)), run_id


class ChatTurnForm(BaseModel):
    """The chat-turn deployment's form: who speaks, in which thread, what they say."""

    user: str = Field(title="User", description="Whose conversation and memory, e.g. 'priya'.")
    message: str = Field(title="Message", description="What the user says.")
    thread: str | None = Field(default=None, title="Thread",
                               description="Continue this thread (`foreman memory list`); empty starts a new one.")
    agent: str = Field(default="generalist", title="Agent", description="Who answers (`foreman agents`).")
    files: list[str] | None = Field(default=None, title="Attached files",
                                    description="Workspace paths or URLs on the allowed hosts, for this turn only.")


@flow(name="chat-turn", log_prints=True, persist_result=True, **FAILURE_HOOKS)
def chat_turn(user: str, message: str, thread: str | None = None, agent: str = "generalist",
              workspace: str | None = None, max_llm_calls: int = 4, ground: bool = True,
              files: list[str] | None = None) -> ChatTurnResult:
    """Answer `message` from `user` in `thread` (a new thread when None), with its history and their memories.

    An unknown thread id is an error (listing the user's threads), never a silent new thread;
    another user's thread is refused and audited. `ground` is passed to the planner when the
    turn hands it a job. `files` are read first (a bad one fails the turn before anything is
    stored) and given to this turn, and to the planner if it hands a job over.
    """
    settings = get_settings()
    user = check_user(user)
    if not message.strip():
        raise ConfigurationError("the message is empty; say something")
    tag_run(user)
    log = get_run_logger()
    log.info(describe_model(settings))
    spec = registry.get(agent)
    policy = RunPolicy.build(settings=settings, workspace=workspace, user=user,
                             allowed_tools=[*(t for t in spec.tools if permission_for(t) is None), *MEMORY_TOOLS])
    attached = prepare_attachments(files, settings=settings, workspace=policy.workspace) if files else None
    env = tool_env(policy, settings)
    store = memory_store(settings)
    info, new = open_thread(store, env.audit, user, thread)
    env = env.model_copy(update={"memory": env.memory.model_copy(update={"thread": info.id})})
    budget = settings.memory_history_tokens
    window = build_history(store, user, info.id, budget)
    recalled = [f.content for f in recall(user, message, RECALL_K, settings=settings)]
    run_id = str(FlowRunContext.get().flow_run.id)
    said = said_with(message, attached)
    store.add_turn(user, info.id, "user", said, count_tokens(said), run_id=run_id)

    asked: list[str] = []
    planner_run = None
    if message.strip().lower().startswith(PLAN_PREFIX):
        asked.append(message.strip()[len(PLAN_PREFIX):].strip() or message)
        reply = ""
    else:
        # the agent's own tools as far as this run allows (no code or writing without their switch)
        allowed = spec.model_copy(update={"tools": [t for t in spec.tools if policy.permits(t)]})
        chat_agent = build_agent(agent, env, settings=settings, extra_tools=MEMORY_TOOLS,
                                 agents=AgentRegistry([allowed]))
        task = cf.Task(clip_tokens(message, budget), name="chat-reply", result_type=str,
                       instructions=INSTRUCTIONS.format(user=user), context=context_for(window, recalled),
                       agents=[chat_agent], tools=[handoff_tool(asked, env.audit)])
        turn_flow = private_flow(name="chat-turn")
        if attached is not None:
            turn_flow.add_events([attached.user_message()])
        with as_user(user):
            reply = run_task(task, audit=env.audit, max_llm_calls=max_llm_calls, flow=turn_flow)
        reply = attached.with_notes(str(reply)) if attached is not None else reply
    if asked:
        answer, planner_run = run_planner(user, asked[0], workspace, ground, files)
        reply = f"{reply}\n\n{answer}".strip()
    store.add_turn(user, info.id, "assistant", str(reply), count_tokens(str(reply)), run_id=run_id)

    added = 0
    fresh = store.thread(user, info.id)
    if (fresh.turns - fresh.consolidated_upto) >= 2 * settings.memory_consolidate_every:
        added = len(consolidate(user, info.id, settings=settings).added)
    log.info("thread %s: %d history tokens, %d memories recalled%s", info.id, window.tokens, len(recalled),
             f", {added} fact(s) consolidated" if added else "")
    return ChatTurnResult(user=user, thread=info.id, reply=str(reply), new_thread=new, history_tokens=window.tokens,
                          summarized_turns=store.thread(user, info.id).summarized_upto, memories=recalled,
                          planner_run=planner_run, consolidated=added,
                          attached=[f.name for f in attached.files] if attached is not None else [])


def said_with(message: str, attached: Attachments | None) -> str:
    """The user's turn as the thread keeps it: the message, and the files' names, not their text."""
    if attached is None or not attached.files:
        return message
    return message + "\n" + "\n".join(f"[attached {f.name} ({f.kind})]" for f in attached.files)


offer_form(chat_turn, ChatTurnForm)


@flow(name="consolidate-thread", log_prints=True)
def consolidate_thread(user: str, thread: str) -> int:
    """Move a thread's durable facts into the user's long-term memory now (a chat's end does this)."""
    user = check_user(user)
    tag_run(user)
    settings = get_settings()
    try:
        return len(consolidate(user, thread, settings=settings).added)
    except ThreadRefused as exc:
        refuse(audit_log(settings.audit_db), "consolidate-thread", user, thread, exc)
        raise


@flow(name="forget-user", log_prints=True, persist_result=True)
def forget_user(user: str) -> Forgotten:
    """Delete everything remembered about `user`: threads, turns, facts, their keywords and embeddings."""
    from foreman.tools.memory.service import forget_user as forget_everything

    user = check_user(user)
    tag_run(user)
    gone = forget_everything(user)
    audit_log().record(AuditRecord(**current_context().model_dump(), tool="forget-user", arguments={"user": user},
                                   outcome="ok", detail=str(gone)))
    get_run_logger().info("forgot %s about %s", gone, user)
    return gone


@flow(name="memory-list", log_prints=True, persist_result=True)
def memory_list(user: str | None = None) -> dict[str, Any]:
    """Who has memories (no user), or one user's threads and facts."""
    store = memory_store()
    if user is None:
        return {"users": store.users()}
    user = check_user(user)
    tag_run(user)
    return {"user": user, "threads": [t.model_dump() for t in store.threads(user)],
            "facts": [f.model_dump() for f in store.facts(user)]}
