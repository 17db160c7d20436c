"""`foreman memory list|show|forget|forget-user`: what Foreman remembers about a user, and deleting it.

Every command works on one user's memory (`--user`, default FOREMAN_USER or the login
name); `list` without a user lists who has memories. Deleting prints how much went, by
kind, and is audited like the `forget-user` flow the UI uses.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from foreman.cli._output import console, preflight, reporting
from foreman.cli.chat import UserOption, default_user

memory_app = typer.Typer(help="Memory: conversation threads and long-term facts, per user.", no_args_is_help=True)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _user(user: str | None) -> str:
    from foreman.tools.memory.scope import check_user

    with preflight():
        return check_user(user or default_user())


def _audit(action: str, arguments: dict, detail: str) -> None:
    from foreman.tools.audit import AuditRecord, audit_log

    audit_log().record(AuditRecord(tool=action, arguments=arguments, outcome="ok", detail=detail, flow_name="cli"))


@memory_app.command("list")
def memory_list(user: UserOption = None,
                every: Annotated[bool, typer.Option("--all", help="Every user with memories, with counts.")] = False
                ) -> None:
    """Your threads and how many facts are remembered (`--all`: every user)."""
    from foreman.tools.memory.service import memory_store

    with reporting():
        store = memory_store()
        if every:
            table = Table("user", "threads", "turns", "facts")
            for row in store.users():
                table.add_row(str(row["user"]), str(row["threads"]), str(row["turns"]), str(row["facts"]))
            console.print(table)
            return
        name = _user(user)
        threads, facts = store.threads(name), store.facts(name)
    table = Table("thread", "turns", "summarized", "last turn", title=f"{name}: {len(threads)} thread(s), "
                                                                       f"{len(facts)} fact(s)")
    for t in threads:
        table.add_row(t.id, str(t.turns), str(t.summarized_upto), _when(t.updated))
    console.print(table)
    console.print(f"[dim]show one: foreman memory show THREAD --user {name}; facts: foreman memory show "
                  f"--user {name}[/dim]", highlight=False, soft_wrap=True)


@memory_app.command("show")
def memory_show(thread: Annotated[str | None, typer.Argument(help="A thread id (default: the user's facts).")]
                = None, user: UserOption = None) -> None:
    """A thread's summary and turns, or (without THREAD) the facts remembered, with ids and sources."""
    from foreman.tools.memory.service import memory_store

    name = _user(user)
    with reporting():
        store = memory_store()
        if thread is None:
            facts = store.facts(name)
            table = Table("id", "fact", "source", "memory", title=f"{name}: {len(facts)} fact(s)")
            for f in facts:
                source = f"{f.source_thread} turn #{f.source_turn}" if f.source_thread else "remembered directly"
                table.add_row(str(f.id), f.content, source, f.namespace)
            console.print(table)
            return
        info = store.thread(name, thread)
        turns = store.turns(name, thread, after=0)
    console.print(f"[bold]thread {info.id}[/bold] ({name}, {info.turns} turns, last {_when(info.updated)})",
                  highlight=False, soft_wrap=True)
    if info.summary:
        console.print(f"[dim]summary of turns 1-{info.summarized_upto}:[/dim]", highlight=False, soft_wrap=True)
        console.print(info.summary, highlight=False, markup=False, soft_wrap=True)
    for t in turns:
        console.print(f"{t.ordinal:>3} {t.role}: {t.content}", highlight=False, markup=False, soft_wrap=True)


@memory_app.command("forget")
def memory_forget(
    fact: Annotated[int | None, typer.Argument(help="The id of a fact (`foreman memory show`).")] = None,
    thread: Annotated[str | None, typer.Option("--thread", help="Delete this whole thread instead.")] = None,
    user: UserOption = None,
) -> None:
    """Delete one fact, or one thread with its turns; prints what was deleted."""
    from foreman.errors import ConfigurationError
    from foreman.tools.memory.service import memory_store
    from foreman.tools.memory.store import Forgotten

    name = _user(user)
    with preflight():
        if (fact is None) == (thread is None):
            raise ConfigurationError("name one fact id, or --thread THREAD; `foreman memory show` lists both")
    with reporting():
        store = memory_store()
        if thread is not None:
            gone = store.delete_thread(name, thread)
        else:
            if not store.delete_fact(name, fact):
                raise ConfigurationError(f"{name} has no fact #{fact}; `foreman memory show --user {name}` lists them")
            gone = Forgotten(facts=1, vectors=1)
        store.scrub()
        _audit("memory-forget", {"user": name, "fact": fact, "thread": thread}, str(gone))
    console.print(f"deleted {gone}", highlight=False, soft_wrap=True)


@memory_app.command("forget-user")
def memory_forget_user(user: UserOption = None,
                       yes: Annotated[bool, typer.Option("--yes", help="Do not ask first.")] = False) -> None:
    """Delete everything remembered about a user: threads, turns, facts and their embeddings."""
    from foreman.cli.chat import history_file
    from foreman.settings import get_settings
    from foreman.tools.memory.service import forget_user

    name = _user(user)
    if not yes:
        typer.confirm(f"Delete every thread and fact remembered about {name}?", abort=True)
    with reporting():
        gone = forget_user(name)
        history = history_file(get_settings().home, name)
        if history.is_file():
            history.unlink()
            gone = f"{gone}; their chat line history ({history})"
        _audit("forget-user", {"user": name}, str(gone))
    console.print(f"forgot {name}: deleted {gone}", highlight=False, soft_wrap=True)
