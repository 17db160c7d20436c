"""`foreman chat`: a terminal conversation, each turn one `chat-turn` flow run.

Readline gives line editing and a history, one per user (FOREMAN_HOME/chat_history/USER); Ctrl-D ends
the chat, which moves the thread's durable facts into long-term memory. The user, the
thread and the agent are checked before the first flow run, so a misspelt thread or
another user's thread is refused (exit 2) before anything runs. So are `--file`s, which go
with the first message; `/attach PATH` in the chat adds a file to the next message (checked
by that turn, whose failure is one line: the conversation goes on).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer

from foreman.cli._output import console, errors_console, preflight, reporting, short_tracebacks

HISTORY_LINES = 1000
ATTACH = "/attach"


def default_user() -> str:
    """FOREMAN_USER, else the login name: who a chat or a memory command is for unless --user says."""
    return os.environ.get("FOREMAN_USER") or getpass.getuser()


UserOption = Annotated[str | None, typer.Option("--user", "-u",
                                                help="Whose conversation and memory (default: FOREMAN_USER or your "
                                                     "login name).")]


def history_file(home: Path, user: str) -> Path:
    """Each user's own line history: pressing Up shows what *they* typed, never another user's."""
    return home / "chat_history" / user


def _readline(home: Path, user: str) -> None:
    try:
        import readline
    except ImportError:  # no readline on this platform: plain input still works
        return
    import atexit

    path = history_file(home, user)
    if path.parent.is_file():  # the one history every user once shared: nobody's alone, so nobody's to show
        path.parent.unlink()
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(HISTORY_LINES)

    def save() -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            readline.write_history_file(path)
            path.chmod(0o600)
        except OSError:
            pass

    atexit.register(save)


def chat(
    user: UserOption = None,
    thread: Annotated[str | None, typer.Option("--thread", "-t",
                                               help="Continue this thread (default: start a new one).")] = None,
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent you talk to (`foreman agents`).")]
    = "generalist",
    workspace: Annotated[Path | None, typer.Option(help="The folder the agent's file tools and the planner "
                                                        "see (default: FOREMAN_WORKSPACE).")] = None,
    file: Annotated[list[str] | None, typer.Option(
        "--file", help="Attach a file to your first message: a workspace path or a URL on the allowed hosts "
                       "(PDF, image, audio, text; repeatable). `/attach PATH` attaches one to the next.")] = None,
) -> None:
    """Talk to an agent. Each turn is a `chat-turn` flow run; `/plan ...` hands a bigger job to the planner;
    `/attach PATH` gives the next message a file; Ctrl-D ends (and moves durable facts into long-term memory)."""
    from foreman.agents.registry import registry
    from foreman.settings import get_settings
    from foreman.tools.memory.scope import check_user

    settings = get_settings()
    with preflight():
        name = check_user(user or default_user())
        registry.get(agent)
        if thread is not None:
            from foreman.flows.chat import open_thread
            from foreman.tools.audit import audit_log
            from foreman.tools.memory.service import memory_store

            open_thread(memory_store(settings), audit_log(settings.audit_db), name, thread)
        if file:  # a bad file is refused before the first turn, not after you typed it
            from foreman.engine.attachments import prepare_attachments

            prepare_attachments(file, settings=settings, workspace=workspace)
    from foreman.flows.chat import chat_turn

    short_tracebacks()
    _readline(settings.home, name)
    console.print(f"[dim]chatting as {name} with {agent}"
                  f"{f' in thread {thread}' if thread else ''}; Ctrl-D ends[/dim]", highlight=False, soft_wrap=True)
    while True:
        try:
            message = input(f"{name}> ")
        except EOFError:
            console.print()
            break
        except KeyboardInterrupt:
            console.print()
            continue
        if not message.strip():
            continue
        if message.split(maxsplit=1)[0] == ATTACH:
            path = message.strip()[len(ATTACH):].strip()
            file = [*(file or []), path] if path else file
            said = f"attached to your next message: {', '.join(file)}" if file else f"usage: {ATTACH} PATH"
            console.print(said, style="dim", highlight=False, markup=False, soft_wrap=True)
            continue
        with reporting():
            state = chat_turn(user=name, message=message, thread=thread, agent=agent,
                              workspace=str(workspace) if workspace else None, files=file or None,
                              return_state=True)
        file = None  # files go with one message
        if state.is_failed():
            try:
                state.result()
            except Exception as exc:  # noqa: BLE001  (one line; the conversation goes on)
                errors_console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
            continue
        result = state.result()
        if thread is None:
            console.print(f"[dim](thread {result.thread}: continue later with "
                          f"`foreman chat --user {name} --thread {result.thread}`)[/dim]", highlight=False, soft_wrap=True)
        thread = result.thread
        console.print(f"{agent}: {result.reply}", highlight=False, markup=False, soft_wrap=True)
    if thread is None:
        return
    with reporting():
        from foreman.tools.memory.consolidate import consolidate

        done = consolidate(name, thread, settings=settings)
    console.print(f"[dim]thread {thread} kept; {len(done.added)} new fact(s) moved to long-term memory[/dim]",
                  highlight=False, soft_wrap=True)
