"""Serve Foreman's flows as deployments from one long-running process, no worker needed.

    .venv/bin/python deployments/serve.py

The process registers each deployment with the Prefect server (PREFECT_API_URL) and
runs whatever is triggered from the UI, the API or a schedule, until stopped. It is
the simplest always-on setup; `prefect.yaml` + a process worker is the other.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env before Prefect loads)
from prefect import serve

from foreman.flows.file_search import file_search
from foreman.flows.planner import plan_and_run


def main() -> None:
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
    )


if __name__ == "__main__":
    main()
