"""`foreman run --file` refuses a bad attachment before any flow run, with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from foreman.cli import app

runner = CliRunner()


def test_run_refuses_a_file_outside_the_workspace_and_an_unknown_format(
        workspace: Path, foreman_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from foreman.settings import reset_settings

    # A model that needs no local server, so the run's other checks pass quickly.
    monkeypatch.setenv("FOREMAN_MODEL", "openai-compatible/any")
    monkeypatch.setenv("FOREMAN_BASE_URL", "http://127.0.0.1:9/v1")
    reset_settings()
    (workspace / "minutes.docx").write_bytes(b"PK\x03\x04")
    for file, says in (("/etc/hostname", "is outside the workspace"),
                       ("minutes.docx", "is a .docx file, which Foreman cannot read")):
        out = runner.invoke(app, ["run", "Summarise it", "--workspace", str(workspace), "--file", file],
                            terminal_width=300)
        assert out.exit_code == 2, out.output
        assert says in out.output
    assert not (foreman_home / "runs.sqlite3").exists()  # nothing ran, no run was recorded
