"""A chart the agent's code draws with matplotlib in the sandbox is kept in the workspace
and attached to the flow run as an image artifact; failing chart code says why."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from foreman.errors import ToolRefused

CHART = """
hosts = ["nas01", "pve1", "fw01"]
used = [71, 43, 12]
plt.bar(hosts, used, color="tab:blue")
plt.ylabel("disk used (%)")
plt.title("Disk use")
print("drew", len(hosts), "bars")
"""


def _env(workspace: Path, *, write: bool):  # type: ignore[no-untyped-def]
    from foreman.settings import get_settings
    from foreman.tools.catalog import ToolEnv

    env = ToolEnv.from_settings(get_settings(), workspace=workspace)
    return env.model_copy(update={"workspace": env.workspace.model_copy(update={"allow_write": write})})


def test_a_chart_is_saved_to_the_workspace_and_attached_to_the_flow_run(
        workspace: Path, foreman_home: Path, prefect_server: None) -> None:
    from prefect import flow, get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.context import FlowRunContext

    from foreman.tools.catalog import build_tool

    tool = build_tool("make_chart", _env(workspace, write=True))

    @flow(name="chart-test")
    def draw() -> tuple[dict, str]:
        return tool(source=CHART, name="Disk use"), str(FlowRunContext.get().flow_run.id)

    out, run_id = draw()
    assert out["files"] == ["charts/Disk-use.png"] and "drew 3 bars" in out["stdout"]
    png = (workspace / "charts" / "Disk-use.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    images = [a for a in artifacts if a.type == "image"]
    assert len(images) == 1 and images[0].key == "chart-disk-use"
    url = images[0].data if isinstance(images[0].data, str) else images[0].data["image_url"]
    assert url == "data:image/png;base64," + base64.b64encode(png).decode()  # the very file
    assert "charts/Disk-use.png" in (images[0].description or "")


def test_a_chart_in_a_read_only_run_is_still_shown_but_not_saved(workspace: Path, foreman_home: Path) -> None:
    from foreman.tools.media.tools import make_chart

    env = _env(workspace, write=False)
    out = make_chart(env.workspace, env.code, CHART, "disk")
    assert out.files == [] and "not saved" in out.note
    assert not (workspace / "charts").exists()


def test_chart_code_that_fails_says_why(workspace: Path, foreman_home: Path) -> None:
    from foreman.tools.media.tools import make_chart

    env = _env(workspace, write=True)
    with pytest.raises(ToolRefused, match=r"the chart code failed \(exit 1\):[\s\S]*ZeroDivisionError"):
        make_chart(env.workspace, env.code, "plt.plot([1, 2]); 1 / 0", "broken")
    with pytest.raises(ToolRefused, match="the code drew no figure"):
        make_chart(env.workspace, env.code, "x = 1", "empty")
    assert not (workspace / "charts").exists()
