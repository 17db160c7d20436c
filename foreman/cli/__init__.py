"""The `foreman` command line: the front door to flows, agents, tools, the audit log and the model.

One module per group of commands; heavy imports (ControlFlow, Prefect) happen inside
commands, so `foreman --help` is quick. Exit codes: 0 done, 1 the run failed (or could not
reach the server), 2 setup or usage, 3 invalid plan or workflow, 4 tool, 5 model.
"""

from __future__ import annotations

import typer

from foreman.cli import people, runs, setup
from foreman.cli.setup import model_app, notifications_app
from foreman.cli.workflows import workflow_app

app = typer.Typer(help="Foreman: LLM agents that do real work, run and watched on Prefect.", no_args_is_help=True)
for command in (runs.run, runs.plan, runs.search, setup.agents, setup.tools,
                people.approvals, people.approve, people.decisions, people.audit):
    app.command()(command)
app.add_typer(model_app, name="model")
app.add_typer(workflow_app, name="workflow")
app.add_typer(notifications_app, name="notifications")

__all__ = ["app"]
