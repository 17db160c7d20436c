"""A person hears about failed runs and waiting approvals through Prefect notification blocks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from foreman.errors import RunFailed
from foreman.flows.workflow import run_workflow
from foreman.settings import reset_settings
from foreman.tools.audit import audit_log

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")


class Inbox:
    """A real local webhook receiver."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                inbox.messages.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """A webhook block saved on the Prefect server and named in FOREMAN_NOTIFY_BLOCKS,
    next to a block name that does not exist (delivery problems must not fail a run)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    box = Inbox()
    CustomWebhookNotificationBlock(
        name="foreman-tests", url=box.url, json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save("ops", overwrite=True)
    monkeypatch.setenv("FOREMAN_NOTIFY_BLOCKS", "custom-webhook/ops,custom-webhook/no-such-block")
    monkeypatch.setenv("FOREMAN_APPROVAL_POLL_S", "1")
    reset_settings()
    yield box
    box.server.shutdown()
    reset_settings()


def test_a_failed_workflow_notifies_and_still_keeps_what_finished(tmp_path: Path, inbox: Inbox) -> None:
    (tmp_path / "ok.py").write_text('import json; print(json.dumps({"done": True}))\n')
    (tmp_path / "broken.py").write_text("import sys; print('disk full', file=sys.stderr); sys.exit(3)\n")
    path = tmp_path / "wf.yaml"
    path.write_text("name: nightly\nsteps:\n  - {id: first, script: ok.py}\n"
                    "  - {id: second, script: broken.py, depends_on: [first], retries: 0}\n")
    with pytest.raises(RunFailed) as failed:
        run_workflow(path=str(path))
    assert failed.value.result.results == {"first": {"done": True}}
    assert failed.value.result.statuses["second"] == "FAILED"
    [message] = inbox.messages
    assert "run-workflow" in message["subject"] and "failed" in message["subject"]
    assert "second" in message["body"] and "/runs/flow-run/" in message["body"]


def test_a_waiting_approval_notifies_and_a_timeout_applies_the_steps_default(tmp_path: Path, inbox: Inbox) -> None:
    (tmp_path / "deploy.py").write_text(
        'import json, os; print(json.dumps(json.loads(os.environ["FOREMAN_INPUTS"])["_approval"]))\n'
    )
    path = tmp_path / "wf.yaml"
    path.write_text("name: release\nsteps:\n  - {id: deploy, script: deploy.py, approval: true, "
                    "approval_default: approve, ask: 'Which tag?'}\n")
    result = run_workflow(path=str(path), approval_timeout_s=2)
    assert result.statuses == {"deploy": "COMPLETED"}
    assert result.results["deploy"]["approved"] is True
    [message] = inbox.messages
    assert "waits for your approval" in message["subject"] and "deploy" in message["body"]
    [decision] = audit_log().decisions(result.run_key)
    assert decision.timed_out and decision.decision == "approved" and "default: approve" in decision.comment


def test_notifications_test_reaches_each_block_and_names_the_one_that_failed(inbox: Inbox) -> None:
    from typer.testing import CliRunner

    from foreman.cli import app

    out = CliRunner().invoke(app, ["notifications", "test"], terminal_width=200)
    assert out.exit_code == 1  # one of the two blocks does not exist
    assert "custom-webhook/ops: sent" in out.output and "custom-webhook/no-such-block: failed" in out.output
    [message] = inbox.messages
    assert "test notification" in message["subject"]


def test_crash_automation_is_set_up_once_per_block_for_foremans_flows(inbox: Inbox) -> None:
    from prefect import get_client
    from prefect.blocks.core import Block

    from foreman.notifications import FOREMAN_FLOWS, crash_automations

    crash_automations(["custom-webhook/ops"])
    [name] = crash_automations(["custom-webhook/ops"])  # run twice: replaced, not duplicated
    with get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(name)
    assert automation.trigger.expect == {"prefect.flow-run.Crashed"}
    assert automation.trigger.match_related["prefect.resource.name"] == FOREMAN_FLOWS
    [action] = automation.actions
    assert action.block_document_id == Block.load("custom-webhook/ops")._block_document_id
