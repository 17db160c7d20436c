"""What reaches a terminal: text, never the escape sequences hidden in it.

A workspace note, a stored fact, a tool argument or an answer can hold control characters that
a terminal obeys (clear the screen, move the cursor, set the title, draw a fake notice). Every
console Foreman prints on is a `SafeConsole`, so no caller has to remember.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Console
from rich.segment import Segment

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """`text` with every control character a terminal would act on shown as a visible sign
    instead (ESC as ␛): a workspace note, a stored fact or a tool argument can hold escape
    sequences that clear the screen or draw a fake prompt. One character for one, so styles
    laid over the text keep their places."""
    return _CONTROL.sub(lambda m: chr(0x2400 + ord(m.group(0))) if ord(m.group(0)) < 0x20 else
                        "␡" if m.group(0) == "\x7f" else "\ufffd", text)


class SafeConsole(Console):
    """A Rich console that prints what it is given, never what it would do to a terminal: every
    piece of text is made `terminal_safe` as it is written; Rich's own styling and cursor
    control (marked as control segments) pass as they are."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment if segment.control else Segment(terminal_safe(segment.text), segment.style, segment.control)
            for segment in buffer)
