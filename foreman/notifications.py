"""Tell a person when a run needs them: it failed, or it waits for an approval.

Always to the run's log (WARNING, so it stands out in the Prefect UI). Beyond that, to
every Prefect notification block named in `FOREMAN_NOTIFY_BLOCKS` — Slack, Microsoft
Teams, Discord, Mattermost, PagerDuty, SendGrid e-mail, or any webhook — so Foreman
reuses Prefect's delivery code instead of carrying its own. Create a block once in the
UI (Blocks -> +) or in Python, then name it here as `<block-type-slug>/<block-name>`.

A notification that cannot be delivered is logged and dropped: telling someone must
never be the reason a run fails.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel

from foreman.prefect_ui import run_url
from foreman.settings import get_settings

log = logging.getLogger(__name__)

EventKind = Literal["run_failed", "awaiting_approval", "test"]
FOREMAN_FLOWS = ["file-search", "plan-and-run", "run-workflow"]


class RunEvent(BaseModel):
    """What happened, to which run, and where to look."""

    kind: EventKind
    flow: str
    run_name: str = ""
    run_id: str = ""
    message: str
    url: str | None = None

    @property
    def subject(self) -> str:
        what = {"run_failed": "failed", "awaiting_approval": "waits for your approval",
                "test": "says hello (a test notification)"}[self.kind]
        return f"[foreman] {self.flow} run {self.run_name or self.run_id} {what}"

    @property
    def body(self) -> str:
        return self.message + (f"\n\nOpen the run: {self.url}" if self.url else "")


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def notify(event: RunEvent) -> list[str]:
    """Send `event` to the log and every configured block; return the blocks that took it."""
    _logger().warning("%s: %s", event.subject, event.body)
    delivered = []
    for slug in get_settings().notify_blocks:
        try:
            _load_block(slug).notify(body=event.body, subject=event.subject, _sync=True)
        except Exception as exc:  # noqa: BLE001  (delivery problems must not fail the run)
            _logger().error("could not notify through block %r: %s: %s", slug, type(exc).__name__, exc)
        else:
            delivered.append(slug)
    return delivered


def _load_block(slug: str) -> Any:
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block

    if "/" not in slug:
        raise ValueError(f"{slug!r} is not <block-type-slug>/<block-name>, e.g. 'slack-webhook/ops'")
    block = Block.load(slug, _sync=True)
    if not isinstance(block, NotificationBlock):
        raise TypeError(f"block {slug!r} is a {type(block).__name__}, not a notification block")
    return block


def on_run_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect `on_failure` / `on_crashed` hook for Foreman's flows."""
    notify(RunEvent(
        kind="run_failed", flow=flow.name, run_name=flow_run.name, run_id=str(flow_run.id),
        message=f"{state.name}: {state.message or 'no message'}", url=run_url(str(flow_run.id)),
    ))


def crash_automations(slugs: list[str] | None = None) -> list[str]:
    """Create (or replace) a Prefect automation per block: notify when a Foreman flow run crashes.

    Failure hooks run inside the flow's process; a run whose process died (power cut, OOM
    kill, worker restart) cannot call them. The server sees the crash and the automation
    sends the message instead. Returns the automations' names.
    """
    from prefect import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    names = []
    for slug in get_settings().notify_blocks if slugs is None else slugs:
        block = _load_block(slug)
        name = f"foreman: crashed runs -> {slug}"
        automation = AutomationCore(
            name=name, description="Created by `foreman notifications automate`.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"}, posture=Posture.Reactive, threshold=1,
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": FOREMAN_FLOWS},
            ),
            actions=[SendNotification(
                block_document_id=block._block_document_id,
                subject="[foreman] {{ flow.name }} run {{ flow_run.name }} crashed",
                body="{{ flow.name }} run {{ flow_run.name }} crashed: {{ flow_run.state.message }}\n\n"
                     "Open the run: {{ flow_run|ui_url }}",
            )],
        )
        with get_client(sync_client=True) as client:
            for old in client.read_automations_by_name(name):
                client.delete_automation(old.id)
            client.create_automation(automation)
        names.append(name)
    return names


FAILURE_HOOKS: dict[str, list[Any]] = {"on_failure": [on_run_failure], "on_crashed": [on_run_failure]}

__all__ = ["FAILURE_HOOKS", "RunEvent", "crash_automations", "notify", "on_run_failure", "run_url"]
