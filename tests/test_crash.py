"""Crash durability: a run killed with `kill -9` takes its running script with it, resumes
without doing a side effect twice, and ends CRASHED in Prefect.

The end-to-end tests run `foreman workflow run` as a real separate process against the
session's Prefect server, kill it mid-step, and resume it the way a person would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from foreman import crash
from foreman.errors import ConfigurationError, RunError

BIN = Path(sys.executable).parent
SLEEP_S = 2  # the killed step's script sleeps this long before its side effect
STARTUP_S = 180  # a loaded 2-core machine needs a while to import the stack


# --- helpers -------------------------------------------------------------------------


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "needs the session's Prefect server"
    return url


def gone(pid: int) -> bool:
    """The process no longer runs (never existed, reaped, or a zombie waiting to be)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def wait_for(check, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def flow_run_state(flow_run_id: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def running_workflow_run(since: datetime) -> str | None:
    """The id of the run-workflow flow run this test started (RUNNING, started after `since`)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["run-workflow"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                start_time=FlowRunFilterStartTime(after_=since)),
            limit=2)
    assert len(runs) <= 1, "another workflow run is running on the test server"
    return str(runs[0].id) if runs else None


def chore(folder: Path) -> Path:
    """first (notes its environment, appends to first.log) -> slow (sleeps, appends to marker.log)."""
    folder.mkdir()
    (folder / "first.py").write_text(
        'import json, os, pathlib\npathlib.Path("env.json").write_text(json.dumps(dict(os.environ)))\n'
        'with open("first.log", "a") as f:\n    f.write("first\\n")\nprint(json.dumps({"ok": True}))\n')
    (folder / "slow.py").write_text(
        "import json, os, pathlib, time\n"
        'pathlib.Path("slow.pids.tmp").write_text(json.dumps({"script": os.getpid(), "guard": os.getppid()}))\n'
        'os.replace("slow.pids.tmp", "slow.pids")\n'
        f"time.sleep({SLEEP_S})\n"
        'with open("marker.log", "a") as f:\n    f.write("slow\\n")\n')
    path = folder / "workflow.yaml"
    path.write_text("""\
name: crash-chore
steps:
  - {id: first, script: {path: first.py, env: {GREETING: hello}}, retries: 0}
  - {id: slow, script: slow.py, depends_on: [first], retries: 0}
""")
    return path


class Runner:
    """`foreman workflow run` in its own process, as a person starts it from a terminal."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {**os.environ, "FOREMAN_HOME": str(tmp / "home"), "PREFECT_API_URL": api_url(),
                    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "OPENAI_API_KEY": "sk-not-for-scripts"}
        self.logs = 0

    def start(self, workflow: Path, *args: str) -> subprocess.Popen:
        self.logs += 1
        log = (self.tmp / f"runner{self.logs}.log").open("w")
        return subprocess.Popen([str(BIN / "foreman"), "workflow", "run", str(workflow), *args],
                                cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def log(self, n: int) -> str:
        return (self.tmp / f"runner{n}.log").read_text()[-4000:]


@pytest.fixture()
def no_crash_automation() -> Iterator[None]:
    """Leave the shared server without Foreman's crash automation, as other tests expect it."""
    def clear() -> None:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            for old in client.read_automations_by_name(crash.AUTOMATION_NAME):
                client.delete_automation(old.id)
        crash._ensured.clear()

    clear()
    yield
    clear()


def start_and_kill(runner: Runner, workflow: Path) -> tuple[str, dict[str, int], float]:
    """Start the workflow, kill -9 its process while `slow` sleeps; the killed flow run's id."""
    since = datetime.now(UTC)
    process = runner.start(workflow)
    pids_file = workflow.parent / "slow.pids"
    try:
        wait_for(lambda: pids_file.exists() or process.poll() is not None, STARTUP_S, "the slow step to start",
                 every_s=0.05)
        assert process.poll() is None, runner.log(1)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # the runner only: not its group, not the script
        process.wait()
    pids = json.loads(pids_file.read_text())
    flow_run_id = wait_for(lambda: running_workflow_run(since), 30, "the killed flow run")
    return flow_run_id, pids, pids_file.stat().st_mtime


# --- the whole story ------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server", "no_crash_automation")
def test_killed_run_takes_its_script_along_resumes_once_and_ends_crashed(tmp_path: Path) -> None:
    workflow = chore(tmp_path / "chore")
    runner = Runner(tmp_path)
    killed, pids, started = start_and_kill(runner, workflow)

    # the script (and its guard) died with the runner: no side effect from the killed run
    wait_for(lambda: gone(pids["script"]) and gone(pids["guard"]), 5, "the script to die with its runner")
    time.sleep(max(0.0, started + SLEEP_S + 1.0 - time.time()))
    assert not (workflow.parent / "marker.log").exists(), "the killed run's script finished its side effect"
    assert flow_run_state(killed).type.value == "RUNNING"  # nobody told Prefect yet
    seen = json.loads((workflow.parent / "env.json").read_text())  # what a script step sees
    assert seen["GREETING"] == "hello" and "OPENAI_API_KEY" not in seen and "FOREMAN_HOME" not in seen

    # resume with the run key (the killed flow run's id): first is reused, slow runs once
    done = runner.start(workflow, "--resume", killed)
    assert done.wait(timeout=300) == 0, runner.log(2)
    assert (workflow.parent / "marker.log").read_text().splitlines() == ["slow"]
    assert (workflow.parent / "first.log").read_text().splitlines() == ["first"]

    # and the killed run is CRASHED, marked by the resume before it ran anything
    state = flow_run_state(killed)
    assert state.type.value == "CRASHED", (state, runner.log(2))
    assert "died" in state.message and "resumed it" in state.message


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "no_crash_automation")
def test_killed_run_nobody_resumes_is_marked_crashed_by_the_server(tmp_path: Path) -> None:
    """Heartbeats every 30 s (Prefect's minimum), so the automation waits 90 s: ~2 minutes."""
    workflow = chore(tmp_path / "chore")
    runner = Runner(tmp_path)
    killed, _, _ = start_and_kill(runner, workflow)
    with crash_client() as client:
        [automation] = client.read_automations_by_name(crash.AUTOMATION_NAME)  # the run set it up
    assert automation.trigger.within.total_seconds() == 90
    state = wait_for(lambda: (s := flow_run_state(killed)).type.value == "CRASHED" and s, 90 + 60,
                     "the automation to mark the run CRASHED", every_s=2)
    assert "No heartbeat" in state.message


def crash_client():
    from prefect import get_client

    return get_client(sync_client=True)


# --- the lease --------------------------------------------------------------------------


def test_a_run_key_is_held_by_one_live_process_at_a_time(tmp_path: Path) -> None:
    with crash.hold_run("key-1", home=tmp_path):
        with pytest.raises(RunError, match="still running"), crash.hold_run("key-1", home=tmp_path):
            pass
        with crash.hold_run("key-2", home=tmp_path):  # other keys are free
            pass
    with crash.hold_run("key-1", home=tmp_path):  # released at the end
        pass
    assert list(crash.lease_dir(tmp_path).iterdir()) == []  # a clean end leaves nothing behind


def test_a_lease_held_by_a_process_that_died_is_free(tmp_path: Path) -> None:
    code = ("import os, sys, time\nfrom foreman import crash\n"
            "with crash.hold_run('key', home=sys.argv[1], flow_run_id='dead'):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=r"still running \(flow run dead, process \d+"), \
                crash.hold_run("key", home=tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with crash.hold_run("key", home=tmp_path, flow_run_id=None):  # the kernel let go of the lock
        pass


@pytest.mark.usefixtures("prefect_server")
def test_resuming_marks_the_dead_holders_flow_run_crashed_and_leaves_a_finished_one_alone(tmp_path: Path) -> None:
    import socket

    from prefect import flow
    from prefect.states import Completed, Running

    @flow(name="run-workflow")
    def stand_in() -> None: ...

    def left_behind(state) -> str:
        """A flow run in `state` whose process died holding run key `key-<id>`."""
        with crash_client() as client:
            run = client.create_flow_run(stand_in, state=state)
        lock, note = crash._paths(f"key-{run.id}", tmp_path)
        lock.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps({"flow_run_id": str(run.id), "pid": 999_999, "host": socket.gethostname()}))
        return str(run.id)

    dead, finished = left_behind(Running()), left_behind(Completed())
    for run_id in (dead, finished):
        with crash.hold_run(f"key-{run_id}", home=tmp_path, flow_run_id="the-resume"):
            pass
    state = flow_run_state(dead)
    assert state.type.value == "CRASHED" and "999999" in state.message
    assert flow_run_state(finished).type.value == "COMPLETED"


# --- the server-side automation ----------------------------------------------------------


@pytest.mark.usefixtures("prefect_server", "no_crash_automation")
def test_crash_automation_is_ensured_once_grows_only_and_respects_a_person_switching_it_off() -> None:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        assert crash.ensure_crash_automation() == crash.AUTOMATION_NAME
        with crash_client() as client:
            [automation] = client.read_automations_by_name(crash.AUTOMATION_NAME)
        first_id = automation.id
        assert crash.ensure_crash_automation() == crash.AUTOMATION_NAME
        assert crash.ensure_crash_automation(grow_only=True) == crash.AUTOMATION_NAME
        with crash_client() as client:
            [again] = client.read_automations_by_name(crash.AUTOMATION_NAME)
        assert again.id == first_id  # already right: left as it was
        assert automation.trigger.within.total_seconds() == 90  # 3 heartbeats of 30 s
        assert automation.trigger.after == {"prefect.flow-run.heartbeat"}
        assert automation.trigger.for_each == {"prefect.resource.id"}
        assert automation.trigger.posture.value == "Proactive"
        [action] = automation.actions
        assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"
        with pytest.raises(ConfigurationError, match="shorter than two heartbeats"):
            crash.ensure_crash_automation(within_s=45)

        crash.ensure_crash_automation(within_s=300)
        crash.ensure_crash_automation(grow_only=True)  # a 30 s process keeps the longer window
    crash.ensure_crash_automation(grow_only=True)  # a 180 s process (the default) needs 540 s
    with crash_client() as client:
        [automation] = client.read_automations_by_name(crash.AUTOMATION_NAME)
        assert automation.trigger.within.total_seconds() == 540 and automation.id != first_id
        client.pause_automation(automation.id)  # a person switches it off in the UI
    assert crash.ensure_crash_automation(grow_only=True) is None
    with crash_client() as client:
        [automation] = client.read_automations_by_name(crash.AUTOMATION_NAME)
    assert not automation.enabled


@pytest.mark.usefixtures("prefect_server")
def test_crash_automation_marks_a_silent_foreman_run_crashed_and_nothing_else() -> None:
    """The automation's trigger and action on the real server, with a 10 s window."""
    from uuid import UUID

    from prefect import flow
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.states import Completed, Running

    @flow(name="run-workflow")
    def foreman_flow() -> None: ...

    @flow(name="somebody-elses-flow")
    def other_flow() -> None: ...

    test_name = "test: crash runs that stop heartbeating"
    automation = crash.crash_automation(10).model_copy(update={"name": test_name})
    with crash_client() as client:
        automation_id = client.create_automation(automation)
        silent = client.create_flow_run(foreman_flow, state=Running())
        finishing = client.create_flow_run(foreman_flow, state=Running())
        other = client.create_flow_run(other_flow, state=Running())
        flows = {run.id: client.read_flow(run.flow_id) for run in (silent, finishing, other)}
    try:
        for run in (silent, finishing, other):  # what Prefect's flow engine sends
            emit_event(event="prefect.flow-run.heartbeat",
                       resource={"prefect.resource.id": f"prefect.flow-run.{run.id}",
                                 "prefect.resource.name": run.name},
                       related=[{"prefect.resource.id": f"prefect.flow.{flows[run.id].id}",
                                 "prefect.resource.role": "flow", "prefect.resource.name": flows[run.id].name}])
        EventsWorker.drain_all(timeout=30)
        with crash_client() as client:
            client.set_flow_run_state(finishing.id, Completed())
        state = wait_for(lambda: (s := flow_run_state(str(silent.id))).type.value == "CRASHED" and s, 60,
                         "the automation to fire", every_s=1)
        assert "No heartbeat for 10 s" in state.message
        time.sleep(2)
        assert flow_run_state(str(finishing.id)).type.value == "COMPLETED"
        assert flow_run_state(str(other.id)).type.value == "RUNNING"  # not Foreman's: not ours to judge
    finally:
        with crash_client() as client:
            client.delete_automation(UUID(str(automation_id)))
