"""Shared fixtures: a real Prefect server for the session, a private Foreman home, scripted models.

Environment is set before Prefect or Foreman is imported, because both read their
settings once at import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="foreman-tests-"))
os.environ["FOREMAN_HOME"] = str(_SESSION_DIR / "home")
os.environ.setdefault("PREFECT_HOME", str(_SESSION_DIR / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "900")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("FOREMAN_MODEL", "local")
os.environ.setdefault("FOREMAN_APPROVAL_POLL_S", "1")  # paused runs check for a decision every second
for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
    os.environ.pop(key, None)

import pytest

import foreman  # noqa: F401  (offline preparation before Prefect/ControlFlow load)

DEMO = Path(__file__).resolve().parent.parent / "demo" / "workspace"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real Prefect server with a fresh SQLite database, shared by the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=900):
        yield


@pytest.fixture()
def foreman_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private FOREMAN_HOME (audit log, stores) for one test."""
    from foreman.settings import reset_settings

    home = tmp_path / "home"
    monkeypatch.setenv("FOREMAN_HOME", str(home))
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    """A copy of the demo workspace the test may change freely."""
    target = tmp_path / "workspace"
    shutil.copytree(DEMO, target)
    return target


def wait_for_paused_run(since: datetime, timeout_s: float = 180) -> str:
    """The id of a flow run started after `since` that is paused (waiting for a person)."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                           start_time=FlowRunFilterStartTime(after_=since))
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=paused, limit=1, offset=0)
        if runs:
            return str(runs[0].id)
        time.sleep(0.5)
    raise AssertionError("no flow run paused for approval")


@pytest.fixture()
def paused_run():
    """Call it to wait for a run of this test to pause at an approval point; returns the run id."""
    since = datetime.now(UTC)
    return lambda timeout_s=180: wait_for_paused_run(since, timeout_s)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
