"""The live status line while a run plans and runs here ("planning: model call 1 of at most 6").

It listens to the run's progress events (`engine.progress`), the same ones that keep the
"progress" artifact current. Prefect's log lines print above it. It steps aside while a
step asks its question on this terminal, and says once where the run can be watched (the
run's page in the server's default UI, as Prefect's own "View at" line then does too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from foreman.engine.progress import Progress, listening


class StatusLine:
    """Turns progress events into one updating line on `console` (a terminal; silent otherwise)."""

    def __init__(self, console: Console, *, show_link: bool = True) -> None:
        self.console = console
        self.status = console.status("starting", spinner="dots")
        self.run_id: str | None = None
        self.show_link = show_link
        self.live = console.is_terminal
        self._log_files: list[tuple[Any, Console]] = []

    def __call__(self, progress: Progress) -> None:
        if self.run_id is None and progress.run_id:
            self.run_id = progress.run_id
            self._say_where()
        if progress.run_id not in (None, self.run_id):
            return  # another run in this process
        if progress.phase == "asking":
            self.stop()  # the question needs the terminal
            return
        if self.live:
            self.status.update(escape(progress.text))
            self.start()

    def start(self) -> None:
        self.status.start()
        self._logs_above()

    def _say_where(self) -> None:
        from foreman.prefect_ui import run_url

        url = run_url(self.run_id)
        if self.show_link and url:
            self.console.print(Text(f"watch it in the Prefect UI: {url}", style="dim"), soft_wrap=True)

    def _logs_above(self) -> None:
        """Prefect's console log prints on a console of its own, which would write through the
        status line; while the line shows, its output goes through the line's console instead."""
        if self._log_files:
            return
        import logging

        from prefect.logging.handlers import PrefectConsoleHandler

        for name in ["", *logging.root.manager.loggerDict]:
            for handler in getattr(logging.getLogger(name), "handlers", []):
                if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.console, _Above):
                    self._log_files.append((handler, handler.console))
                    handler.console = _Above(handler.console, self.console)

    def stop(self) -> None:
        for handler, own in self._log_files:
            handler.console = own
        self._log_files.clear()
        self.status.stop()


class _Above:
    """A log handler's console that renders as before (theme, colours) and prints above the status line."""

    def __init__(self, own: Console, line: Console) -> None:
        self.own = own
        self.line = line

    def print(self, *objects: Any, **kwargs: Any) -> None:
        with self.own.capture() as captured:
            self.own.print(*objects, **kwargs)
        self.line.print(Text.from_ansi(captured.get().rstrip("\n")), soft_wrap=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.own, name)


@contextmanager
def status_line(console: Console, *, show_link: bool = True) -> Iterator[StatusLine]:
    """Show what the run in this block is doing, until it ends; every link it logs opens the default UI."""
    from foreman.prefect_ui import prefect_links_to_default_ui

    line = StatusLine(console, show_link=show_link)
    if line.live:
        line.start()
    try:
        with listening(line), prefect_links_to_default_ui():
            yield line
    finally:
        line.stop()
