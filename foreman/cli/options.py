"""Options and checks several commands share."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

from foreman.cli._output import REFUSED, console, fail

APPROVE_HERE = typer.Option(
    "--approve-here/--approve-in-ui",
    help="Answer approval points on this terminal, or in the Prefect UI. "
         "Default: the UI when PREFECT_API_URL points at a server, else here.",
    show_default=False,
)
PARAM = typer.Option("--param", "-p", help="A workflow parameter, NAME=VALUE (repeat for more).")


def approve_in(here: bool | None) -> str:
    """Where approval points ask: the terminal when told, or when no Prefect server is configured
    (the temporary one has no UI a person can open); otherwise the Prefect UI."""
    if here is not None:
        return "terminal" if here else "ui"
    from prefect.settings import get_current_settings

    return "ui" if get_current_settings().api.url else "terminal"


def params(pairs: list[str] | None) -> dict[str, str]:
    """`--param topic=backups` pairs as a dict; the workflow file's types convert the values."""
    parsed: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            fail(f"--param {pair!r}: write it as NAME=VALUE, e.g. --param topic=backups", REFUSED)
        parsed[name.strip()] = value
    return parsed


def show_model(out: Console | None = None) -> None:
    """Say which model the run's agents use (checked already, in the command's preflight)."""
    from foreman.agents.models import describe_model
    from foreman.settings import get_settings

    (out or console).print(Text(describe_model(get_settings()), style="dim"))
