"""How the CLI talks: one console, one way to fail, one mapping from errors to exit codes.

Every command runs inside `reporting()`: a `ForemanError` becomes one red line and the exit
code of its branch (`foreman.errors.exit_code`); a Prefect server that cannot be reached
becomes one line saying what to check. Checks made before anything starts run inside
`preflight()`: whatever they refuse exits 2, with no flow run created and nobody notified.

Tracebacks are for `--debug` (or FOREMAN_DEBUG=1): without it an unexpected error is one
line too, and Prefect's console log shows a failed run's error without its stack (the run's
log in the UI keeps the whole traceback). Messages are printed as text, never as Rich
markup, so an error quoting `pattern '^[a-z0-9]*$'` shows every character.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.markup import escape
from rich.text import Text

from foreman.errors import ConfigurationError, ForemanError, exit_code
from foreman.terminal import SafeConsole, terminal_safe  # noqa: F401  (terminal_safe: for callers)

console = SafeConsole()
errors_console = SafeConsole(stderr=True)
REFUSED = 2  # exit code: refused before anything ran
PASS_THROUGH = (typer.Exit, typer.Abort, typer.BadParameter)  # the CLI's own ways out, not errors
_debug = {"on": False}


def set_debug(on: bool) -> None:
    """`foreman --debug`: keep tracebacks, on the terminal and from Prefect's console log."""
    _debug["on"] = on


def short_tracebacks() -> None:
    """Before a flow runs here: Prefect's console log keeps errors to one line unless --debug."""
    if not debugging():
        _short_prefect_tracebacks()


def debugging() -> bool:
    return _debug["on"]


def fail(message: str, code: int = 1) -> NoReturn:
    errors_console.print(Text.assemble(("error: ", "red"), str(message)), highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def server_hint() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    where = f"PREFECT_API_URL={url}" if url else "no PREFECT_API_URL (a temporary server)"
    return (f"could not reach the Prefect server ({where}). Start it (`prefect server start`) or point "
            "PREFECT_API_URL at the one your runs use, e.g. http://127.0.0.1:4200/api")


def _unreachable() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.TransportError,)


def _server_errors() -> tuple[type[BaseException], ...]:
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    return (PrefectHTTPStatusError, ObjectNotFound)


def _unexpected(exc: BaseException) -> NoReturn:
    if debugging():
        raise exc
    fail(f"{type(exc).__name__}: {exc} (unexpected: `foreman --debug ...` shows the traceback)", 1)


@contextmanager
def reporting() -> Iterator[None]:
    """Turn Foreman's errors and an unreachable server into one line and an exit code."""
    unreachable, server_errors = _unreachable(), _server_errors()
    try:
        yield
    except PASS_THROUGH:
        raise
    except ForemanError as exc:
        if debugging():
            raise
        fail(str(exc), exit_code(exc))
    except unreachable as exc:
        fail(f"{server_hint()} ({type(exc).__name__}: {exc})", REFUSED)
    except server_errors as exc:
        fail(f"the Prefect server answered: {type(exc).__name__}: {exc}", 1)
    except Exception as exc:  # noqa: BLE001  (one line, unless --debug)
        _unexpected(exc)


@contextmanager
def preflight() -> Iterator[None]:
    """Checks before a flow run exists: a refusal is one line and exit code 2, whatever its branch."""
    from pydantic import ValidationError

    try:
        yield
    except PASS_THROUGH:
        raise
    except ForemanError as exc:
        if debugging():
            raise
        fail(str(exc), REFUSED)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), REFUSED)
    except _unreachable() as exc:
        fail(f"{server_hint()} ({type(exc).__name__}: {exc})", REFUSED)


def check_server() -> None:
    """The server PREFECT_API_URL names answers its health check (nothing to check on a temporary one)."""
    import httpx
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if not api.url:
        return
    headers = {"Authorization": f"Bearer {api.key.get_secret_value()}"} if api.key else {}
    auth = tuple(api.auth_string.get_secret_value().split(":", 1)) if api.auth_string else None
    try:
        answer = httpx.get(f"{str(api.url).rstrip('/')}/health", headers=headers, auth=auth, timeout=5.0)
    except httpx.HTTPError as exc:
        raise ConfigurationError(f"{server_hint()} ({type(exc).__name__}: {exc})") from None
    if answer.status_code != 200:
        raise ConfigurationError(f"{server_hint()} (its health check answered {answer.status_code})")


def ui_hint(flow_run_id: object = None) -> str:
    from foreman.prefect_ui import run_url, ui_base

    base = ui_base()
    if base:
        return f"See the run in the Prefect UI: {run_url(str(flow_run_id)) if flow_run_id else base.url + '/runs'}"
    return ("Runs used a temporary Prefect server; start `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api to keep them in the UI at http://127.0.0.1:4200")


def require_server() -> None:
    """Approvals live on the server the runs use; a temporary one would show nothing."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        fail("no Prefect server configured. Is PREFECT_API_URL set to the server the runs use "
             "(e.g. http://homelab:4200/api)? Without it there is only this process's temporary server, "
             "with nothing waiting.", REFUSED)


class _NoTraceback(logging.Formatter):
    """Prefect's console format, with a failed run's stack replaced by a pointer to --debug."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if not record.exc_info:
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        error = record.exc_info[1]
        record.exc_info, record.exc_text = None, None
        try:
            text = self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved
        return f"{text} [{type(error).__name__}: {error}; the traceback is in the run's log, or use --debug]"


def _short_prefect_tracebacks() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter))


__all__ = ["REFUSED", "check_server", "console", "debugging", "errors_console", "escape", "fail", "preflight",
           "reporting", "require_server", "server_hint", "set_debug", "short_tracebacks", "ui_hint"]
