"""What a run is doing right now, told to whoever listens: the progress artifact, a terminal's status line.

The flow, the engine and the approvers publish; listeners subscribe for as long as they
care. Process-wide on purpose (a step's events come from Prefect's worker threads), so each
event carries its flow run's id and a listener keeps to its own run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

Phase = Literal["starting", "planning", "running", "waiting", "asking", "answering", "done"]


class Progress(BaseModel):
    """One step forward: the phase, a line a person reads, and how far (0-100) when known."""

    phase: Phase
    text: str
    percent: float | None = Field(default=None, ge=0, le=100)
    run_id: str | None = None


Listener = Callable[[Progress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def _current_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def publish(progress: Progress) -> None:
    """Tell every listener; a listener that fails is logged and never fails the run."""
    if progress.run_id is None:
        progress = progress.model_copy(update={"run_id": _current_run_id()})
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(progress)
        except Exception as exc:  # noqa: BLE001  (telling must never break a run)
            log.debug("progress listener failed: %s", exc)


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Receive every event published while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield listener
    finally:
        with _lock:
            _listeners.remove(listener)
