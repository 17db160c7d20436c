"""A run whose process died ends CRASHED in Prefect, and two live processes never run one run key.

A flow run killed with `kill -9` (OOM, power cut, a worker restarted) cannot report its own
end: Prefect keeps showing it RUNNING forever, and the crash notifications
(`foreman notifications automate`) never fire. Three things mark it CRASHED, whichever comes
first:

1. **The worker**, for a deployment run whose flow process died while the worker lives:
   Prefect's process worker reports "Flow run infrastructure exited with non-zero status
   code" itself. Nothing here.
2. **The resume** (`--resume KEY`, `resume=KEY`), at once: the run that executes a plan
   holds a *lease* on its run key (`hold_run`): an exclusive `flock` on
   `FOREMAN_HOME/leases/<key>.lock`, next to a note of who holds it (flow run id, pid,
   host). The kernel drops the lock the moment the process dies, however it dies; a clean
   end deletes both files. So a resume that gets the lock and still finds the note has
   proof that the previous holder died mid-run, and sets that flow run CRASHED (if it is
   not final yet) before running anything. A resume while the holder is alive (paused at an
   approval, still working) is refused with `RunStillRunning` naming it, instead of running the
   same steps twice at once.
3. **The server**, for a run nobody resumes (a terminal run, a worker that died with its
   flow): every Prefect 3.8 flow run sends a `prefect.flow-run.heartbeat` event every
   `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (default 180, minimum 30). The automation
   `ensure_crash_automation` keeps on the server is Prefect's documented "zombie flow" one,
   limited to Foreman's flows: after a heartbeat, expect another heartbeat or a state
   change within `within` seconds (3 heartbeats, at least 90 s; Prefect Cloud's managed
   version allows 3 too), else change the run to CRASHED. A dead run is CRASHED between `within - frequency` and `within` + 5 s (the
   server's proactive evaluation step) after it died. Each `hold_run` ensures it (one read;
   at most every 5 minutes per process; only against a real server, `PREFECT_API_URL` set),
   growing `within` if this process heartbeats more slowly than the automation allows for,
   never shrinking it. Disable it in the Prefect UI (Automations) to opt out: runs then
   leave it alone; `ensure_crash_automation(within_s)` sets it explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from foreman.errors import ConfigurationError, RunStillRunning

log = logging.getLogger(__name__)

AUTOMATION_NAME = "foreman: mark runs that stop heartbeating CRASHED"
HEARTBEATS_PER_WINDOW = 3
MIN_WITHIN_S = 90

ENSURE_EVERY_S = 300.0
_ensured: dict[str, float] = {}  # API URL -> when this process last ensured the automation there


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001  (outside a Prefect run)
        return log


# --- the lease ---------------------------------------------------------------------


def lease_dir(home: Path | None = None) -> Path:
    if home is None:
        from foreman.settings import get_settings

        home = get_settings().home
    return Path(home) / "leases"


def _paths(run_key: str, home: Path | None) -> tuple[Path, Path]:
    name = hashlib.sha256(run_key.encode()).hexdigest()[:32]
    folder = lease_dir(home)
    return folder / f"{name}.lock", folder / f"{name}.json"


def _read_note(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _lock(lock_path: Path) -> int | None:
    """An fd holding the exclusive lock on `lock_path`, or None if a live process holds it."""
    import fcntl

    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder released (and deleted) it between our open and our lock: again


def _current_flow_run_id() -> str | None:
    if "prefect" not in sys.modules:
        return None  # no Prefect, no flow run (and no 5 s import to find that out)
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    except Exception:  # noqa: BLE001  (no readable flow-run context: the lease just records none)
        return None


@contextmanager
def hold_run(run_key: str, *, flow_run_id: str | None = None, home: Path | None = None) -> Iterator[None]:
    """Hold `run_key` while this process runs it; first mark a dead previous holder CRASHED.

    Raises `RunStillRunning` if a live process holds it. `flow_run_id` defaults to the current
    flow run's."""
    flow_run_id = flow_run_id or _current_flow_run_id()
    lock_path, note_path = _paths(run_key, home)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(lock_path)
    if fd is None:
        holder = _read_note(note_path) or {}
        raise RunStillRunning(
            f"run {run_key} is still running (flow run {holder.get('flow_run_id', '?')}, process "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')}); wait for it to end or cancel it, "
            "then resume it")
    try:
        previous = _read_note(note_path)
        if previous is not None:
            _previous_holder_died(run_key, previous, flow_run_id)
        note = {"run_key": run_key, "flow_run_id": flow_run_id, "pid": os.getpid(),
                "host": socket.gethostname(), "started_at": time.time()}
        tmp = note_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(note))
        os.replace(tmp, note_path)
        _ensure_for_this_process()
        yield
    finally:
        for path in (note_path, lock_path):  # delete while still holding the lock, then let go
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        os.close(fd)


def _previous_holder_died(run_key: str, note: dict[str, Any], flow_run_id: str | None) -> None:
    dead = note.get("flow_run_id")
    if not dead or dead == flow_run_id:
        return  # nothing to mark, or Prefect retried this very flow run in a new process
    if note.get("host") != socket.gethostname():
        _logger().warning("run %s was last held by flow run %s on host %s, not this one: leaving its state "
                          "to the heartbeat automation", run_key, dead, note.get("host"))
        return
    message = (f"Its process ({note.get('pid')} on {note.get('host')}) died while running run key {run_key}; "
               f"found when flow run {flow_run_id or '(none)'} resumed it")
    try:
        if mark_crashed(dead, message):
            _logger().warning("flow run %s (run key %s) was left running by a process that is gone; marked it "
                              "CRASHED", dead, run_key)
    except Exception as exc:  # noqa: BLE001  (marking must never stop the resume)
        _logger().warning("could not mark flow run %s CRASHED: %s: %s", dead, type(exc).__name__, exc)


def mark_crashed(flow_run_id: str, message: str) -> bool:
    """Set flow run `flow_run_id` CRASHED unless it already ended; True if it was changed."""
    from uuid import UUID

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        return False  # not a Prefect flow run id
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return False
        if run.state is not None and run.state.is_final():
            return False
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return True


# --- the server-side automation ------------------------------------------------------


def heartbeat_s() -> int | None:
    """How often this process's flow runs send heartbeats (None: never)."""
    from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL
    from prefect.settings import get_current_settings

    value = get_current_settings().flows.heartbeat_frequency
    return None if value is None else max(int(value), MINIMUM_HEARTBEAT_INTERVAL)


def default_within_s(heartbeat: int | None = None) -> int:
    heartbeat = heartbeat or heartbeat_s() or 0
    return max(HEARTBEATS_PER_WINDOW * heartbeat, MIN_WITHIN_S)


def crash_automation(within_s: float) -> Any:
    """Prefect's "zombie flow" automation, for Foreman's flows."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from foreman.notifications import FOREMAN_FLOWS

    return AutomationCore(
        name=AUTOMATION_NAME,
        description="Created by Foreman (foreman/crash.py): a Foreman flow run that sends no heartbeat and "
                    f"reaches no final state for {within_s:g} s has lost its process.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},  # another heartbeat, or any state change (custom names too)
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FOREMAN_FLOWS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"No heartbeat for {within_s:g} s: the run's process is gone (marked by the automation "
                    f"{AUTOMATION_NAME!r}).",
        )],
    )


def ensure_crash_automation(within_s: float | None = None, *, grow_only: bool = False) -> str | None:
    """Make the server's crash-detection automation exist with this window; idempotent.

    `within_s` defaults to 3 heartbeats of this process (at least 90 s); less than 2 is refused.
    With `grow_only` (what each run does), an existing automation whose window is already as
    long is kept, and one a person disabled in the UI is left alone (the way to opt out).
    Returns its name, or None when this process sends no heartbeats or it is disabled."""
    from prefect import get_client

    heartbeat = heartbeat_s()
    if heartbeat is None:
        _logger().warning("PREFECT_FLOWS_HEARTBEAT_FREQUENCY is unset: flow runs send no heartbeats, so the "
                          "server cannot tell a dead run from a live one")
        return None
    if within_s is None:
        within_s = default_within_s(heartbeat)
    elif within_s < 2 * heartbeat:
        raise ConfigurationError(
            f"crash detection window {within_s:g}s is shorter than two heartbeats ({heartbeat}s each, "
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY): live runs would be marked CRASHED")
    wanted = crash_automation(within_s)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION_NAME)
        if len(existing) == 1:
            have = existing[0]
            if grow_only and not have.enabled:
                return None  # switched off in the UI: the person's choice, left alone
            same_shape = (have.trigger.model_dump(exclude={"within", "id"})
                          == wanted.trigger.model_dump(exclude={"within", "id"}))
            have_s = have.trigger.within.total_seconds()
            if same_shape and have.enabled and (have_s == within_s or (grow_only and have_s >= within_s)):
                return AUTOMATION_NAME
        for old in existing:
            client.delete_automation(old.id)
        client.create_automation(wanted)
    _logger().info("crash detection: automation %r marks a Foreman run CRASHED %gs after its last heartbeat",
                   AUTOMATION_NAME, within_s)
    return AUTOMATION_NAME


def _ensure_for_this_process() -> None:
    """From `hold_run`: against a real server, at most every few minutes, never failing the run."""
    if "prefect" not in sys.modules:
        return  # not running Prefect flows here
    try:
        from prefect.settings import get_current_settings

        api = get_current_settings().api.url
        if not api:
            return  # an ephemeral server lives and dies with this process
        last = _ensured.get(api)
        if last is None or time.monotonic() - last >= ENSURE_EVERY_S:
            _ensured[api] = time.monotonic()
            ensure_crash_automation(grow_only=True)
        _heartbeat_now()
    except Exception as exc:  # noqa: BLE001  (crash detection is a safety net; it must never stop a run)
        _logger().warning("could not set up crash detection on the Prefect server: %s: %s",
                          type(exc).__name__, exc)


def _heartbeat_now() -> None:
    """One heartbeat for the current flow run, as Prefect's engine sends them.

    A proactive trigger only follows runs whose `after` event it saw, and the engine's first
    heartbeat went out when the flow started, before this run may have created the
    automation; without this, a run killed before its next heartbeat (30-180 s later) would
    never be marked."""
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.events.schemas.events import RelatedResource

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    run = ctx.flow_run
    related = [RelatedResource.model_validate({
        "prefect.resource.id": f"prefect.flow.{run.flow_id}", "prefect.resource.role": "flow",
        "prefect.resource.name": ctx.flow.name})] if ctx.flow is not None else []
    emit_event(event="prefect.flow-run.heartbeat",
               resource={"prefect.resource.id": f"prefect.flow-run.{run.id}",
                         "prefect.resource.name": run.name or ""},
               related=related)
