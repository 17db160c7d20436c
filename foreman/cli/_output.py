"""How the CLI talks: one console, one way to fail, one mapping from errors to exit codes.

Every command runs inside `reporting()`: a `ForemanError` becomes one red line and the exit
code of its branch (`foreman.errors.exit_code`); a Prefect server that cannot be reached
becomes one line saying what to check. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console

from foreman.errors import ForemanError, exit_code

console = Console()
errors_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    errors_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=code)


def server_hint() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    where = f"PREFECT_API_URL={url}" if url else "no PREFECT_API_URL (a temporary server)"
    return (f"could not reach the Prefect server ({where}). Start it (`prefect server start`) or point "
            "PREFECT_API_URL at the one your runs use, e.g. http://127.0.0.1:4200/api")


def _server_errors() -> tuple[type[BaseException], ...]:
    import httpx
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    return (httpx.TransportError, PrefectHTTPStatusError, ObjectNotFound)


@contextmanager
def reporting() -> Iterator[None]:
    """Turn Foreman's errors and an unreachable server into one line and an exit code."""
    server_errors = _server_errors()
    try:
        yield
    except ForemanError as exc:
        fail(str(exc), exit_code(exc))
    except server_errors as exc:
        fail(f"{server_hint()} ({type(exc).__name__}: {exc})", 1)


def ui_hint() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return f"See the run in the Prefect UI: {url.removesuffix('/api')}/runs"
    return ("Runs used a temporary Prefect server; start `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api to keep them in the UI at http://127.0.0.1:4200")


def require_server() -> None:
    """Approvals live on the server the runs use; a temporary one would show nothing."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        fail("no Prefect server configured. Is PREFECT_API_URL set to the server the runs use "
             "(e.g. http://homelab:4200/api)? Without it there is only this process's temporary server, "
             "with nothing waiting.", 2)
