"""Workflow files (Level 6): a person writes the plan, in YAML, in the same format the planner fills.

    name: log-pipeline
    schedule: {cron: "0 3 * * *"}          # or {interval_s: 3600}
    on_failure: fail_fast
    steps:
      - id: collect
        script: {path: collect.py}
      - id: summarize
        agent: researcher
        instructions: Summarize the anomalies in the collected logs.
        tools: [read_file]
        depends_on: [collect]
        condition: collect.count > 0

Parameters (`params:`, see `engine.params`) let a run change a topic or a limit without
editing the file; `${name}` in a step takes the run's value.

Loading checks everything plan validation checks, plus that script paths exist; every
error names the file, the step and the field, and nothing runs from a bad file.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from foreman.engine.params import Param, declare, resolve, substitute
from foreman.engine.plan import Plan, SubTask
from foreman.engine.validate import PlanInvalid, PlanScope, ValidPlan, validate_plan
from foreman.errors import WorkflowError


class Schedule(BaseModel):
    """When the workflow runs by itself once deployed: a cron line or an interval, in a time zone."""

    cron: str | None = None
    interval_s: float | None = Field(default=None, gt=0)
    timezone: str | None = Field(default=None, description="IANA name, e.g. Europe/Berlin (default UTC).")

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of cron or interval_s")
        # Prefect's own schedule model: what it accepts here, the server accepts later
        from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

        try:
            if self.cron is not None:
                CronSchedule(cron=self.cron, timezone=self.timezone)
            else:
                IntervalSchedule(interval=self.interval_s, timezone=self.timezone)
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
        return self


class WorkflowFile(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    schedule: Schedule | None = None
    workspace: str | None = Field(
        default=None, description="The folder agent steps' file tools work in (relative to this file)."
    )
    on_failure: Literal["fail_fast", "continue"] = "fail_fast"
    params: dict[str, Any] = Field(default_factory=dict)
    steps: list[dict[str, Any]] = Field(min_length=1)


class Workflow(BaseModel):
    """A loaded, validated workflow."""

    name: str
    description: str
    schedule: Schedule | None
    path: Path
    plan: ValidPlan
    workspace: Path | None = None
    params: dict[str, Param] = Field(default_factory=dict)
    values: dict[str, Any] = Field(default_factory=dict, description="This run's parameter values.")

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.params.items() if not p.required}

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def tools(self) -> list[str]:
        return sorted({t for sub in self.plan.plan.tasks for t in sub.tools})




def _pydantic_errors(prefix: str, exc: ValidationError) -> list[str]:
    return [f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()]


def _step(raw: dict[str, Any], index: int) -> tuple[SubTask | None, list[str]]:
    name = f"steps[{index}]" + (f" ({raw.get('id')})" if isinstance(raw, dict) and raw.get("id") else "")
    if not isinstance(raw, dict):
        return None, [f"{name}: a step is a mapping with at least an id"]
    data = dict(raw)
    data.setdefault("title", data.get("id", "step"))
    if "script" in data and "instructions" not in data:
        script = data["script"] or {}
        data["instructions"] = f"run {script.get('path', '?') if isinstance(script, dict) else script}"
    if isinstance(data.get("script"), str):
        data["script"] = {"path": data["script"]}
    try:
        return SubTask(**data), []
    except ValidationError as exc:
        return None, _pydantic_errors(f"{name}.", exc)


STAND_INS: dict[str, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False}


def _with_params(step: SubTask, values: dict[str, Any], declared: Collection[str]) -> tuple[SubTask, list[str]]:
    """The step with `${name}` replaced in title, instructions, condition and script args/env."""
    errors: list[str] = []

    def text(field: str, value: str, literal: bool = False) -> str:
        out, problems = substitute(value, values, literal=literal, declared=declared)
        errors.extend(f"{step.id}.{field}: {p}" for p in problems)
        return out

    update: dict[str, Any] = {"title": text("title", step.title),
                              "instructions": text("instructions", step.instructions)}
    if step.condition:
        update["condition"] = text("condition", step.condition, literal=True)
    if step.script is not None:
        update["script"] = step.script.model_copy(update={
            "args": [text(f"script.args[{i}]", a) for i, a in enumerate(step.script.args)],
            "env": {**{k: text(f"script.env.{k}", v) for k, v in step.script.env.items()},
                    **({"FOREMAN_PARAMS": json.dumps(values)} if values else {})},
        })
    return step.model_copy(update=update), errors


def load_workflow(path: str | Path, scope: PlanScope, params: dict[str, Any] | None = None, *,
                  require_params: bool = True) -> Workflow:
    """Read, check and validate a workflow file, or raise `WorkflowError` listing every problem.

    `params` are this run's values; without `require_params` (check, deploy) a missing
    required one gets a stand-in so the rest of the file is still checked."""
    path = Path(path).expanduser().resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise WorkflowError(path, ["no such file"]) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(path, [f"not valid YAML: {exc}"]) from None
    try:
        spec = WorkflowFile.model_validate(raw)
    except ValidationError as exc:
        raise WorkflowError(path, _pydantic_errors("", exc)) from None

    declared, errors = declare(spec.params)
    given = dict(params or {})
    if not require_params:
        given.update({n: STAND_INS[p.type] for n, p in declared.items() if p.required and n not in given})
    values, problems = resolve(declared, given)
    errors.extend(problems)
    steps: list[SubTask] = []
    for index, raw_step in enumerate(spec.steps):
        step, problems = _step(raw_step, index)
        errors.extend(problems)
        if step is None:
            continue
        step, problems = _with_params(step, values, declared)
        errors.extend(problems)
        steps.append(step)
        if step.script is not None:
            script = Path(step.script.path).expanduser()
            script = script if script.is_absolute() else path.parent / script
            if not script.exists():
                errors.append(f"{step.id}.script.path: {step.script.path!r} does not exist (relative to {path.parent})")
    workspace = None
    if spec.workspace is not None:
        workspace = Path(spec.workspace).expanduser()
        workspace = (workspace if workspace.is_absolute() else path.parent / workspace).resolve()
        if not workspace.is_dir():
            errors.append(f"workspace: {spec.workspace!r} is not a folder (relative to {path.parent})")
    if errors:
        raise WorkflowError(path, errors)
    plan = Plan(objective=spec.description or spec.name, rationale=spec.description, tasks=steps,
                on_failure=spec.on_failure)
    tools = sorted({t for s in steps for t in s.tools})
    scope = scope.model_copy(update={"allowed_tools": sorted(set(scope.allowed_tools) | set(tools))})
    try:
        valid = validate_plan(plan, scope)
    except PlanInvalid as exc:
        raise WorkflowError(path, [str(e) for e in exc.errors]) from None
    return Workflow(name=spec.name, description=spec.description, schedule=spec.schedule, path=path, plan=valid,
                    workspace=workspace, params=declared, values=values)


def skeleton(folder: str | Path) -> str:
    """A workflow file with one script step per Python script in `folder`, to edit by hand."""
    folder = Path(folder).expanduser().resolve()
    scripts = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        raise WorkflowError(folder, ["no Python scripts (*.py) in this folder"])
    steps = []
    previous = None
    for script in scripts:
        step_id = script.stem.lower().replace("-", "_")
        step: dict[str, Any] = {"id": step_id, "script": {"path": script.name}, "retries": 1, "timeout_s": 600}
        if previous:
            step["depends_on"] = [previous]  # a guess: edit to the real order
        steps.append(step)
        previous = step_id
    doc = {"name": folder.name.lower().replace("_", "-"), "description": f"Scripts in {folder.name}",
           "schedule": {"cron": "0 3 * * *"}, "on_failure": "fail_fast", "steps": steps}
    header = ("# Generated by `foreman workflow init`: one step per script, chained in name order.\n"
              "# Edit depends_on, add conditions (e.g. `condition: collect.count > 0`), agent steps and\n"
              "# approval points, then check it with `foreman workflow check FILE`.\n")
    return header + yaml.safe_dump(doc, sort_keys=False)
