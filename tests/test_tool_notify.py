"""notify_user: a run log line and a markdown artifact inside a flow; a plain log outside."""

from __future__ import annotations

import logging
from uuid import UUID

import pytest

from foreman.errors import ToolRefused
from foreman.tools.notify import ARTIFACT_KEY, notify_user


def test_outside_a_run_it_logs_and_says_no_artifact(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="foreman.tools.notify"):
        reply = notify_user("Backup finished", level="warning")
    assert "no artifact" in reply
    assert any(
        r.levelno == logging.WARNING and "Backup finished" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    ("message", "level", "reason"),
    [("hi", "shout", "use one of"), ("   ", "info", "empty"), ("x" * 5_000, "info", "under")],
)
def test_bad_calls_are_refused_with_advice(message: str, level: str, reason: str) -> None:
    with pytest.raises(ToolRefused, match=reason):
        notify_user(message, level=level)


@pytest.mark.usefixtures("prefect_server")
def test_inside_a_flow_it_creates_an_artifact_and_a_run_log() -> None:
    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.objects import Artifact
    from prefect.context import get_run_context
    from prefect.logging.handlers import APILogHandler

    @task
    def in_task() -> str:
        return notify_user("Step 2 of 3 done", level="info")

    @flow
    def notifying_flow() -> tuple[UUID, str, str]:
        run_id = get_run_context().flow_run.id
        reply = notify_user("Report **ready**", level="warning")
        return run_id, reply, in_task()

    run_id, reply, task_reply = notifying_flow()
    assert "artifact" in reply and "no artifact" not in reply
    assert "no artifact" not in task_reply

    with get_client(sync_client=True) as client:
        # Not client.read_artifacts: it always sends "task_runs": null, which this Prefect
        # server rejects (422), and any task-run filter would drop flow-level artifacts.
        response = client.request(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])).model_dump(
                    mode="json", exclude_unset=True
                ),
                "flow_runs": FlowRunFilter(id=FlowRunFilterId(any_=[run_id])).model_dump(
                    mode="json", exclude_unset=True
                ),
                "limit": 10,
            },
        )
        artifacts = Artifact.model_validate_list(response.json())
        bodies = sorted(a.data for a in artifacts)
        assert bodies == ["**INFO**: Step 2 of 3 done", "**WARNING**: Report **ready**"]
        assert all(a.type == "markdown" and a.flow_run_id == run_id for a in artifacts)

        APILogHandler().flush()  # run logs reach the API in batches; wait for them
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
            limit=200,
            offset=0,
        )
    messages = [log.message for log in logs]
    assert any("Report **ready**" in m for m in messages), messages
