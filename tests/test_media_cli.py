"""`foreman run --file`: a bad attachment is refused before any flow run (exit 2); a good one goes to the run."""

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


def test_run_with_a_file_gives_it_to_the_run_and_keeps_the_question_as_asked(
        workspace: Path, foreman_home: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from foreman.agents.models import use_model
    from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn
    from foreman.settings import reset_settings

    monkeypatch.setenv("FOREMAN_MODEL", "openai-compatible/any")  # preflight needs no local server
    monkeypatch.setenv("FOREMAN_BASE_URL", "http://127.0.0.1:9/v1")
    reset_settings()
    asked: list[str] = []

    def respond(turn: Turn) -> ScriptedReply:
        asked.append("\n".join(str(m.content) for m in turn.messages))
        return ScriptedReply(content="The UPS warranty ends on 2026-04-02.")

    with use_model(ScriptedChatModel(responder=respond)):
        out = runner.invoke(app, ["run", "When does the UPS warranty end?", "--workspace", str(workspace),
                                  "--no-ground", "--file", "docs/warranty-summary.pdf"], terminal_width=300)
    assert out.exit_code == 0, out.output
    assert "The UPS warranty ends on 2026-04-02" in out.output
    assert "warranty-summary.pdf:p2:" in out.output  # cited by the file's name and page
    [prompt] = asked
    assert "until 2026-04-02" in prompt
    assert "Question: When does the UPS warranty end?\n" in prompt  # the objective, not the file's text
