"""Runs a browser test looks at, started as a separate process against a real `prefect server start`.

    PREFECT_API_URL=http://127.0.0.1:4277/api python tests/ui_scenarios.py planner|paused

`planner`: a planner run (scripted model: it plans, does two steps, writes an answer) that finishes.
`paused`: a run whose second step waits at an approval point until someone answers.
Not a test module: pytest collects `test_*.py` only.
"""

from __future__ import annotations

import sys

import foreman  # noqa: F401  (offline env first)

# isort: split

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, succeed, succeed_model
from foreman.engine.plan import Plan, SubTask
from foreman.flows.planner import plan_and_run

ANSWER = "The Q3 report recommends moving the backups off-site by November."

APPROVAL_PLAN = Plan(objective="tidy the logs", tasks=[
    SubTask(id="look", title="Look for old logs", instructions="List the old logs.", agent="generalist"),
    SubTask(id="delete", title="Delete old logs", instructions="Delete them.", agent="generalist",
            depends_on=["look"], approval=True, ask="How many days of logs to keep?"),
])


def scripted() -> ScriptedChatModel:
    def respond(turn):
        text = "\n".join(str(m.content) for m in turn.messages)
        if "a plan for this objective" in text:
            return succeed_model(rationale="read the report, then answer", tasks=[
                {"id": "read", "title": "Read the report", "instructions": "Read report.txt.",
                 "agent": "researcher", "tools": ["read_file"]},
                {"id": "tell", "title": "Say what it recommends", "instructions": "Say it.", "agent": "writer",
                 "depends_on": ["read"]},
            ])
        if "Answer the objective" in text:
            return succeed(ANSWER)
        return succeed("found 3 old logs" if "old logs" in text else "the report says: move backups off-site")

    return ScriptedChatModel(responder=respond)


def main(scenario: str) -> None:
    with use_model(scripted()):
        if scenario == "planner":
            state = plan_and_run("What does the Q3 report recommend?", ground=False, return_state=True)
        else:
            state = plan_and_run("tidy the logs", plan=APPROVAL_PLAN, ground=False, return_state=True)
    print(f"flow-run {state.state_details.flow_run_id} {state.type.value}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
