"""Faults under load on the always-on stack: PostgreSQL, a Prefect server, two process workers.

Real processes throughout (the same ones `bench/load.py --faults` measures): the server is
stopped and started again while runs are in flight, and one worker is killed with kill -9
together with its flow processes. Each script step appends to a log when it finishes, so a
step run twice shows twice; the run summaries say what completed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import load

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[load.Stack]:
    from foreman.pg import TempPostgres

    postgres = TempPostgres()
    provider = load.FakeProvider().start()
    stack = None
    try:
        stack = load.Stack(tmp_path_factory.mktemp("stack"), postgres.start().create_database("prefect"),
                           provider.url)
        stack.provider = provider  # type: ignore[attr-defined]
        stack.up()
        stack.set_workers(2, limit=2)  # each takes at most 2 runs: the 4 of the kill test land on both
        yield stack
    finally:
        if stack:
            stack.down()
        postgres.remove()
        provider.stop()


def test_a_server_restart_mid_run_loses_nothing_and_runs_no_step_twice(stack: load.Stack) -> None:
    found = load.fault_restart_server(stack, stack.provider, runs=3, latency=2.0)  # type: ignore[attr-defined]
    assert found["server_down_s"] >= 5
    assert found["retried_ok"] == found["retried"], found  # whatever did not complete by itself resumed
    assert found["results_lost"] == 0 and found["duplicate_steps"] == 0, found


def test_a_killed_worker_leaves_its_runs_crashed_and_a_resume_reuses_their_finished_steps(stack: load.Stack) -> None:
    found = load.fault_kill_worker(stack, runs=4, latency=3.0)
    assert found["killed_runs"] >= 1, found
    assert found["killed_marked_crashed"] == found["killed_runs"], found  # not RUNNING forever
    assert found["resumed_ok"] == found["killed_runs"], found
    assert found["reused_steps"] >= found["killed_runs"], found  # each had finished a step before the kill
    assert found["other_worker_completed"] == found["other_worker_runs"], found  # the other worker lost nothing
    assert found["results_lost"] == 0 and found["duplicate_steps"] == 0, found  # finished steps not run again
