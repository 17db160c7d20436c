"""Options and checks several commands share."""

from __future__ import annotations

import typer
from rich.console import Console

from foreman.cli._output import console, fail

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
            fail(f"--param {pair!r}: write it as NAME=VALUE, e.g. --param topic=backups", 2)
        parsed[name.strip()] = value
    return parsed


def check_model(out: Console | None = None) -> None:
    """Refuse a model setting that cannot work (missing key, unknown provider) before any run."""
    from foreman.agents.models import check_model_settings, describe_model
    from foreman.settings import get_settings

    settings = get_settings()
    check_model_settings(settings)
    (out or console).print(f"[dim]{describe_model(settings)}[/dim]", highlight=False)
