"""The approvals waiting for a person, read and answered through the Prefect API.

The Prefect UI's Resume form is one way to decide; this is the other, for a person on a
terminal (an SSH session to the homelab) or a script: list what waits, read the same
context the form shows, and answer. It talks to whatever server PREFECT_API_URL names.
A run is named as `foreman audit` names it: its id, its first 8 or more characters, or its
run name ("calm-otter").
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from foreman.errors import ConfigurationError, NotWaiting

PAUSE_PREFIX = "approve-"
MIN_PREFIX = 8


class WaitingApproval(BaseModel):
    """One paused run waiting at a Foreman approval point."""

    run_id: str
    run_name: str
    flow: str
    step: str
    since: datetime | None
    timeout_at: datetime | None
    request: str
    asks_value: bool = False  # the step asks a question: its form has a "value" field

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

    keyset = keyset_from_paused_state(state)
    try:
        request = client.read_flow_run_input(flow_run.id, keyset["description"])
    except Exception:  # noqa: BLE001  (an old pause without a description still shows)
        request = ""
    try:
        asks = "value" in json.loads(client.read_flow_run_input(flow_run.id, keyset["schema"]))["properties"]
    except Exception:  # noqa: BLE001  (a pause without a schema input: no value field to offer)
        asks = False
    flow = client.read_flow(flow_run.flow_id).name
    return WaitingApproval(run_id=str(flow_run.id), run_name=flow_run.name, flow=flow, step=step,
                           since=state.timestamp, timeout_at=state.state_details.pause_timeout,
                           request=_unquote(request), asks_value=asks)

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


def find_run(client: Any, ref: str) -> Any:
    """The flow run `ref` names: a full id, its first 8+ characters, or its run name."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    ref = ref.strip()
    hint = "`foreman approvals` lists the waiting ones"
    try:
        return client.read_flow_run(UUID(ref))
    except ValueError:
        pass
    except ObjectNotFound:
        raise NotWaiting(f"no flow run {ref!r} on this server; {hint}") from None
    named = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[ref])), limit=2)
    if len(named) == 1:
        return named[0]
    if len(ref) >= MIN_PREFIX:
        paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
        for runs in (client.read_flow_runs(flow_run_filter=paused, limit=200), client.read_flow_runs(limit=200)):
            found = [r for r in runs if str(r.id).startswith(ref.lower())]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise NotWaiting(f"{ref!r} is the start of several runs' ids ({', '.join(str(r.id) for r in found)}); "
                                 "give more characters")
    if len(named) > 1:
        raise NotWaiting(f"several runs are named {ref!r}; give the run id instead ({hint})")
    raise NotWaiting(f"no flow run {ref!r} on this server (give its id, its first {MIN_PREFIX}+ characters, "
                     f"or its run name); {hint}")


def read_approval(run: str) -> WaitingApproval:
    """The approval a run waits at, or `NotWaiting` saying what the run is doing instead."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        flow_run = find_run(client, run)
        waiting = _waiting(client, flow_run)
        if waiting is None:
            state = flow_run.state.type.value if flow_run.state else "no state"
            raise NotWaiting(f"run {flow_run.name} ({flow_run.id}) is {state}, not waiting for an approval")
        return waiting


def answer_approval(run: str, *, approve: bool, comment: str = "", value: str = "",
                    decided_by: str = "") -> WaitingApproval:
    """Resume the run with a decision, as the Resume form does; the run audits it as any other.

    `value` is sent only when the step asks a question (the form has no field for it otherwise)."""
    from prefect.flow_runs import resume_flow_run

    waiting = read_approval(run)
    if value and not waiting.asks_value:
        raise ConfigurationError(f"step {waiting.step} asks no question; answer without --value")
    answer: dict[str, Any] = {"decision": "approve" if approve else "reject", "comment": comment,
                              "decided_by": decided_by}
    if waiting.asks_value:
        answer["value"] = value
    try:
        resume_flow_run(UUID(waiting.run_id), run_input=answer)
    except Exception as exc:  # noqa: BLE001  (the pause timed out or another person answered first)
        raise NotWaiting(f"could not answer run {waiting.run_name}: {exc}") from None
    return waiting
