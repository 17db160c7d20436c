"""Retry a step that another process may be blocking, until a deadline, then raise LocalModelError.

Starting the shared server waits on things other processes hold: the state-file lock
(another run is starting or stopping the server) and the proxy's fixed port (an old
server is still letting go of it). Both wait the same way, so they share this loop;
only what is retried, how often, for how long and what the error says differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from foreman.errors import LocalModelError

T = TypeVar("T")


def retry_until(
    attempt: Callable[[], T],
    *,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    timeout_s: float,
    every_s: float,
    give_up: Callable[[Exception], str],
    keep_cause: bool = True,
) -> T:
    """`attempt()`, again every `every_s` while it raises `retry_on`, for up to `timeout_s`.

    Then a `LocalModelError` whose message is `give_up(the last exception)`, chained to
    that exception unless `keep_cause` is False (for a cause the message already says).
    Any other exception from `attempt` propagates at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return attempt()
        except retry_on as exc:
            if time.monotonic() > deadline:
                raise LocalModelError(give_up(exc)) from (exc if keep_cause else None)
            time.sleep(every_s)
