"""Serve Foreman's flows as deployments from one long-running process, no worker needed.

    .venv/bin/python deployments/serve.py [--workflows DIR ...] [--schedules-on]

Besides file-search, plan-and-run and run-workflow, every `*/workflow.yaml` under the
given folders (default: the repo's `workflows/`) is served as its own deployment with the
schedule its file carries, switched off unless `--schedules-on`, and a form of its own in
the UI (the file's params as typed fields).

The process registers each deployment with the Prefect server (PREFECT_API_URL) and
runs whatever is triggered from the UI, the API or a schedule, until stopped. It is
the simplest always-on setup; `prefect.yaml` + a process worker is the other.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env before Prefect loads)

# isort: split

import argparse
from pathlib import Path

from prefect import serve

from foreman.flows.chat import chat_turn, forget_user
from foreman.flows.file_search import file_search
from foreman.flows.ingest import ingest_knowledge
from foreman.flows.planner import plan_and_run
from foreman.flows.workflow import (
    deployment_parameters,
    prefect_schedules,
    run_workflow,
    workflow_flow,
)
from foreman.settings import REPO_ROOT


def workflow_deployments(folders: list[Path], active: bool) -> list:
    """One deployment per workflow file; a bad file stops the start with its errors."""
    deployments = []
    for path in sorted(p for folder in folders for p in folder.glob("*/workflow.yaml")):
        workflow, parameters = deployment_parameters(path)
        deployments.append(workflow_flow(workflow).to_deployment(  # the file's params as typed fields
            name=workflow.name, description=workflow.description, parameters=parameters,
            schedules=prefect_schedules(workflow, active=active), tags=["foreman", "workflow"],
        ))
    return deployments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=Path, nargs="*", default=[REPO_ROOT / "workflows"])
    parser.add_argument("--schedules-on", action="store_true", help="Create the workflows' schedules active.")
    args = parser.parse_args()
    serve(
        file_search.to_deployment(
            name="file-search",
            description="Find the workspace files that relate to a question and report the findings.",
            parameters={"query": "launch meeting"},
            tags=["foreman"],
        ),
        plan_and_run.to_deployment(
            name="plan-and-run",
            description="Plan an objective into a sub-task graph and run it.",
            parameters={"objective": "Which important tasks are open this week?"},
            tags=["foreman", "planner"],
        ),
        run_workflow.to_deployment(
            name="run-workflow",
            description="Run any workflow file (YAML): scripts, agents and approval points. Give its path.",
            parameters={"path": str(REPO_ROOT / "workflows" / "log_pipeline" / "workflow.yaml")},
            tags=["foreman", "workflow"],
        ),
        ingest_knowledge.to_deployment(
            name="ingest-knowledge",
            description="Index a folder into a knowledge base; only changed files are embedded again.",
            parameters={"folder": str(REPO_ROOT / "demo" / "workspace")},
            tags=["foreman", "knowledge"],
        ),
        chat_turn.to_deployment(
            name="chat-turn",
            description="One turn of a conversation for a user, with its history and the user's memories.",
            parameters={"user": "demo", "message": "Hello! What do you remember about me?"},
            tags=["foreman", "chat"],
        ),
        forget_user.to_deployment(
            name="forget-user",
            description="Delete everything remembered about a user (threads, facts, embeddings).",
            tags=["foreman", "memory"],
        ),
        *workflow_deployments(args.workflows, active=args.schedules_on),
    )


if __name__ == "__main__":
    main()
