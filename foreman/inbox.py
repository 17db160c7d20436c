"""The approvals waiting for a person, read and answered through the Prefect API.

The Prefect UI's Resume form is one way to decide; this is the other, for a person on a
terminal (an SSH session to the homelab) or a script: list what waits, read the same
context the form shows, and answer. It talks to whatever server PREFECT_API_URL names.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from foreman.errors import NotWaiting

PAUSE_PREFIX = "approve-"


class WaitingApproval(BaseModel):
    """One paused run waiting at a Foreman approval point."""

    run_id: str
    run_name: str
    flow: str
    step: str
    since: datetime | None
    timeout_at: datetime | None
    request: str

    @property
    def title(self) -> str:
        return next((line.removeprefix("### ") for line in self.request.splitlines() if line.startswith("### ")),
                    f"Approve step {self.step}?")




def _step_from_key(pause_key: str | None) -> str | None:
    if not pause_key or not pause_key.startswith(PAUSE_PREFIX):
        return None  # a pause that is not ours
    return pause_key.removeprefix(PAUSE_PREFIX).replace("-", "_")


def _waiting(client: Any, flow_run: Any) -> WaitingApproval | None:
    state = flow_run.state
    step = _step_from_key(state.state_details.pause_key if state else None)
    if state is None or not state.is_paused() or step is None:
        return None
    from prefect.input.run_input import keyset_from_paused_state

    try:
        request = client.read_flow_run_input(flow_run.id, keyset_from_paused_state(state)["description"])
    except Exception:  # noqa: BLE001  (an old pause without a description still shows)
        request = ""
    flow = client.read_flow(flow_run.flow_id).name
    return WaitingApproval(run_id=str(flow_run.id), run_name=flow_run.name, flow=flow, step=step,
                           since=state.timestamp, timeout_at=state.state_details.pause_timeout,
                           request=_unquote(request))


def _unquote(value: str) -> str:
    """Run inputs are stored as JSON; the description is a JSON string."""
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        return value or ""
    return decoded if isinstance(decoded, str) else value


def waiting_approvals(limit: int = 50) -> list[WaitingApproval]:
    """Runs paused at a Foreman approval point, oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            sort=FlowRunSort.START_TIME_ASC, limit=limit,
        )
        return [w for run in runs if (w := _waiting(client, run)) is not None]


def read_approval(run_id: str) -> WaitingApproval:
    """The approval a run waits at, or `NotWaiting` saying what the run is doing instead."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(UUID(run_id))
        except (ValueError, ObjectNotFound):
            raise NotWaiting(f"no flow run {run_id!r} on this server; `foreman approvals` lists the waiting ones") from None
        waiting = _waiting(client, flow_run)
        if waiting is None:
            state = flow_run.state.type.value if flow_run.state else "no state"
            raise NotWaiting(f"run {flow_run.name} ({run_id}) is {state}, not waiting for an approval")
        return waiting


def answer_approval(run_id: str, *, approve: bool, comment: str = "", value: str = "",
                    decided_by: str = "") -> WaitingApproval:
    """Resume the run with a decision; the run records it in the audit log as any other."""
    from prefect.flow_runs import resume_flow_run

    waiting = read_approval(run_id)
    try:
        resume_flow_run(UUID(run_id), run_input={"approve": approve, "comment": comment, "value": value,
                                                 "decided_by": decided_by})
    except Exception as exc:  # noqa: BLE001  (the pause timed out or another person answered first)
        raise NotWaiting(f"could not answer run {waiting.run_name}: {exc}") from None
    return waiting
