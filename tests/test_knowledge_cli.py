"""`foreman knowledge ingest|list|search|drop`, and the `ingest-knowledge` flow's artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from foreman.cli import app
from foreman.flows.ingest import report_markdown
from foreman.settings import reset_settings
from foreman.tools.knowledge.bases import workspace_base

pytestmark = pytest.mark.usefixtures("foreman_home")

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["knowledge", *args], terminal_width=200)


@pytest.mark.usefixtures("prefect_server")
def test_ingest_list_search_drop(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREMAN_KNOWLEDGE_ROOTS", str(workspace.parent))
    reset_settings()
    out = invoke("ingest", str(workspace), "--name", "notebook")
    assert out.exit_code == 0, out.output
    assert "notebook:" in out.output and "added" in out.output
    assert "skipped (binary): assets/rack-photo.png" in out.output

    again = invoke("ingest", str(workspace), "--name", "notebook")
    assert again.exit_code == 0, again.output
    assert "0 added, 0 changed, 0 removed" in again.output

    listed = invoke("list")
    assert listed.exit_code == 0 and "notebook" in listed.output and " 38 " in listed.output  # files

    found = invoke("search", "Which UDP port does WireGuard listen on?", "-k", "3")
    assert found.exit_code == 0, found.output
    assert "notes/vpn.md:" in found.output and "51820" in found.output

    dropped = invoke("drop", "notebook")
    assert dropped.exit_code == 0 and "dropped" in dropped.output
    missing = invoke("drop", "notebook")
    assert missing.exit_code == 2 and "unknown knowledge base 'notebook'" in missing.output


def test_ingest_outside_the_allowed_roots_is_refused_before_any_run(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = invoke("ingest", str(outside))
    assert out.exit_code == 2, out.output
    assert "outside the folders knowledge may be built from" in out.output
    assert "FOREMAN_KNOWLEDGE_ROOTS" in out.output


def test_search_without_any_base_says_how_to_build_one() -> None:
    out = invoke("search", "anything")
    assert out.exit_code == 2 and "foreman knowledge ingest FOLDER" in out.output


def test_the_ingest_report_artifact_lists_counts_and_skip_reasons(workspace: Path) -> None:
    from foreman.tools.knowledge.ingest import ingest

    report = ingest(workspace, roots=[workspace])
    text = report_markdown(report)
    assert f"Knowledge base `{workspace_base(workspace)}`" in text
    assert "| binary | 1 | `assets/rack-photo.png` |" in text
    assert f"| {len(report.added)} | 0 | 0 | 0 | 1 |" in text
