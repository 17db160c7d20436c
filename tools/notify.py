"""Tell the user something while the work goes on.

Inside a Prefect flow or task run the message goes to the run's log *and* becomes a
markdown artifact (key "notification"), so it shows in the Prefect UI next to the run
and can be read back through the API. Outside a run it goes to this module's logger:
the call still works, which keeps tools usable from plain scripts and tests.
"""

from __future__ import annotations

import logging

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from foreman.errors import ToolRefused

log = logging.getLogger(__name__)

ARTIFACT_KEY = "notification"
MAX_MESSAGE_CHARS = 4_000
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def notify_user(message: str, level: str = "info") -> str:
    """Log `message` for the user at `level` and, inside a run, save it as an artifact.

    Returns a short confirmation the agent can read. Refuses an empty message, an unknown
    level, or a message over MAX_MESSAGE_CHARS.
    """
    level = level.strip().lower()
    if level not in LEVELS:
        raise ToolRefused(
            "notify_user", f"level {level!r} is unknown; use one of {', '.join(LEVELS)}"
        )
    text = message.strip()
    if not text:
        raise ToolRefused("notify_user", "the message is empty; say what the user should know")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ToolRefused(
            "notify_user",
            f"the message is {len(text)} characters; keep it under {MAX_MESSAGE_CHARS} "
            "(write long results to a file instead)",
        )
    try:
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    except MissingContextError:
        logger = log
    logger.log(LEVELS[level], "Notification for the user: %s", text)
    if not _in_run():
        return f"Logged a {level} notification (no Prefect run, so no artifact)."
    # _sync=True: a tool may be called from a sync function inside a running event loop,
    # where Prefect would otherwise hand back an un-awaited coroutine.
    create_markdown_artifact(
        markdown=f"**{level.upper()}**: {text}",
        key=ARTIFACT_KEY,
        description=f"Notification ({level}) for the user",
        _sync=True,  # type: ignore[call-arg]
    )
    return f"Notified the user ({level}); saved as the '{ARTIFACT_KEY}' artifact of this run."
