"""The `foreman` command line: the front door to flows, agents, tools, the audit log and the model.

One module per group of commands; heavy imports (ControlFlow, Prefect) happen inside
commands, so `foreman --help` is quick. Exit codes: 0 done, 1 the run failed, 2 refused
before anything ran (a setting, a file, a param, the model configuration, an unreachable
server: no flow run was created), 3 the planner could not write a valid plan, 4 tool,
5 model. `--debug` keeps tracebacks.
"""

from __future__ import annotations

import typer

from foreman.cli import chat, people, runs, setup
from foreman.cli._output import preflight as refuse_before_running
from foreman.cli._output import set_debug
from foreman.cli.knowledge import knowledge_app
from foreman.cli.memory import memory_app
from foreman.cli.setup import model_app, notifications_app
from foreman.cli.workflows import workflow_app
from foreman.settings import get_settings

app = typer.Typer(help="Foreman: LLM agents that do real work, run and watched on Prefect.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", envvar="FOREMAN_DEBUG",
                                    help="Show tracebacks (errors are otherwise one line).")) -> None:
    """Foreman: LLM agents that do real work, run and watched on Prefect."""
    set_debug(debug)
    with refuse_before_running():  # a setting that does not read: one line, exit 2, before any command
        get_settings()


for command in (runs.run, runs.plan, runs.search, setup.agents, setup.tools,
                people.approvals, people.approve, people.decisions, people.audit):
    app.command()(command)
app.add_typer(model_app, name="model")
app.add_typer(workflow_app, name="workflow")
app.add_typer(notifications_app, name="notifications")
app.add_typer(knowledge_app, name="knowledge")
app.command()(chat.chat)
app.add_typer(memory_app, name="memory")

__all__ = ["app"]
