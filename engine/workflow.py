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
        files: [docs/runbook.pdf]            # this step's agent is given the file (text, or images)
        depends_on: [collect]
        condition: collect.count > 0

Parameters (`params:`, see `engine.params`) let a run change a topic or a limit without
editing the file; `${name}` in a step takes the run's value.

Loading checks everything plan validation checks, plus that script paths exist; every
error names the file, the step and the field, and nothing runs from a bad file. A key
Foreman does not know (`aproval: true`) or a key given twice is an error, not ignored:
either would silently change what runs (no approval point, the last value winning).
A step's `files:` (workspace paths, or URLs on the allowed hosts) are read before the run
starts (`check_step_files`): a missing file, or an image that needs a vision model the run
does not have, stops it there, with the step named; only that step's agent gets them.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foreman.engine.params import Param, declare, resolve, substitute
from foreman.engine.plan import Plan, ScriptStep, SubTask
from foreman.engine.validate import PlanInvalid, PlanScope, ValidPlan, validate_plan
from foreman.errors import ForemanError, WorkflowError
from foreman.safe_yaml import YamlRefused, check_yaml

if TYPE_CHECKING:
    from foreman.settings import Settings


class Schedule(BaseModel):
    """When the workflow runs by itself once deployed: a cron line or an interval, in a time zone."""

    model_config = ConfigDict(extra="forbid")  # `crn:` must not leave the workflow unscheduled

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
    """The file as written. Unknown keys are errors: `schedul:` would otherwise just vanish."""

    model_config = ConfigDict(extra="forbid")

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


# The keys each mapping of the file may have, by where it sits (for did-you-mean hints).
KNOWN_KEYS: dict[tuple[str, ...], list[str]] = {
    (): list(WorkflowFile.model_fields),
    ("schedule",): list(Schedule.model_fields),
}


def _unknown_key(where: str, key: Any, known: Collection[str]) -> str:
    """`steps[0] (deploy).aproval: unknown key; did you mean approval?`"""
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
    return f"{where}{key}: unknown key; {hint}"


def _key_errors(where: str, data: Mapping[Any, Any], known: Collection[str]) -> list[str]:
    return [_unknown_key(where, key, known) for key in data if key not in known]


def _pydantic_errors(prefix: str, exc: ValidationError) -> list[str]:
    """One line per error; pydantic's "Extra inputs are not permitted" becomes a did-you-mean."""
    lines = []
    for e in exc.errors():
        loc = tuple(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden" and loc[:-1] in KNOWN_KEYS:
            lines.append(_unknown_key(prefix + "".join(f"{p}." for p in loc[:-1]), loc[-1], KNOWN_KEYS[loc[:-1]]))
        else:
            lines.append(f"{prefix}{'.'.join(loc)}: {e['msg'].removeprefix('Value error, ')}")
    return lines


# libyaml's parser when PyYAML has it: the pure-Python one took ~40 s for a 30,000-step file
_SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SAFE_LOADER):  # type: ignore[misc, valid-type]
    """A SafeLoader that notes each key given twice in one mapping; PyYAML keeps the last one silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[yaml.MappingNode, Any, int, int]] = []  # (mapping, key, first line, line)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` is overridden on purpose
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    self.duplicates.append((node, key, seen[key], line))
                else:
                    seen[key] = line
            except TypeError:
                continue  # an unhashable key: the constructor below refuses it
        return super().construct_mapping(node, deep=deep)


def _where(root: yaml.Node, target: yaml.Node) -> str:
    """The path of `target` inside the document, as errors write it: `steps[1] (deploy).script.`"""
    parts: list[str] = []
    node = root
    for _ in range(100):  # a bound: aliases can make the node graph recursive
        if node is target:
            break
        children: list[tuple[str, yaml.Node]] = []
        if isinstance(node, yaml.MappingNode):
            children = [(f".{k.value}" if parts else str(k.value), v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = [(f"[{i}]" + _step_id(item), item) for i, item in enumerate(node.value)]
        inside = [(name, child) for name, child in children if child is not node and _contains(child, target)]
        if not inside:
            break
        name, node = inside[0]
        parts.append(name)
    return "".join(parts) + ("." if parts else "")


def _contains(outer: yaml.Node, inner: yaml.Node) -> bool:
    return outer.start_mark.index <= inner.start_mark.index and inner.end_mark.index <= outer.end_mark.index


def _step_id(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "id" and isinstance(value, yaml.ScalarNode):
                return f" ({value.value})"
    return ""


def _read_text(path: Path) -> str:
    """The file's text; a file saved in another encoding is named with its first undecodable byte."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WorkflowError(path, ["no such file"]) from None
    except OSError as exc:
        raise WorkflowError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = (f"not UTF-8: byte {exc.start} (line {line}) is 0x{data[exc.start]:02x}, which UTF-8 "
                   "cannot decode; save the file as UTF-8")
        raise WorkflowError(path, [problem]) from None


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    """The parsed document and one error per duplicate key, each with the key's path and lines."""
    text = _read_text(path)
    try:
        check_yaml(text)  # before libyaml sees it: too deep segfaults its C parser; a merge bomb hangs it
    except YamlRefused as exc:
        raise WorkflowError(path, [f"not readable safely: {exc}"]) from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        raw = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise WorkflowError(path, [f"not valid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    errors = [f"{_where(root, node)}{key}: given twice (lines {first} and {line}); YAML keeps only the "
              "last one, so remove or rename one" for node, key, first, line in loader.duplicates]
    if not isinstance(raw, dict):
        raise WorkflowError(path, [*errors, "a workflow file is a mapping with at least name and steps"])
    return raw, errors


def _param_key_errors(params: Mapping[str, Any]) -> list[str]:
    """`params: {limit: {type: int, defualt: 3}}` would make `limit` silently required."""
    return [e for name, spec in params.items() if isinstance(spec, dict)
            for e in _key_errors(f"params.{name}.", spec, list(Param.model_fields))]


def _step(raw: dict[str, Any], index: int) -> tuple[SubTask | None, list[str]]:
    """The step as a SubTask, and its errors. Unknown keys are checked here, not by SubTask: the
    planner's JSON goes through SubTask too, and it may stay lenient."""
    name = f"steps[{index}]" + (f" ({raw.get('id')})" if isinstance(raw, dict) and raw.get("id") else "")
    if not isinstance(raw, dict):
        return None, [f"{name}: a step is a mapping with at least an id"]
    errors = _key_errors(f"{name}.", raw, list(SubTask.model_fields))
    if isinstance(raw.get("script"), dict):
        errors += _key_errors(f"{name}.script.", raw["script"], list(ScriptStep.model_fields))
    data = dict(raw)
    data.setdefault("title", data.get("id", "step"))
    if "script" in data and "instructions" not in data:
        script = data["script"] or {}
        data["instructions"] = f"run {script.get('path', '?') if isinstance(script, dict) else script}"
    if isinstance(data.get("script"), str):
        data["script"] = {"path": data["script"]}
    try:
        return SubTask(**data), errors
    except ValidationError as exc:
        return None, errors + _pydantic_errors(f"{name}.", exc)


STAND_INS: dict[str, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False}


def _with_params(step: SubTask, values: dict[str, Any], declared: Collection[str]) -> tuple[SubTask, list[str]]:
    """The step with `${name}` replaced in title, instructions, condition and script args/env."""
    errors: list[str] = []

    def text(field: str, value: str, literal: bool = False) -> str:
        out, problems = substitute(value, values, literal=literal, declared=declared)
        errors.extend(f"{step.id}.{field}: {p}" for p in problems)
        return out

    update: dict[str, Any] = {"title": text("title", step.title),
                              "instructions": text("instructions", step.instructions),
                              "files": [text(f"files[{i}]", f) for i, f in enumerate(step.files)]}
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
    raw, errors = _read_yaml(path)
    try:
        spec = WorkflowFile.model_validate(raw)
    except ValidationError as exc:
        raise WorkflowError(path, errors + _pydantic_errors("", exc)) from None
    if len(spec.steps) > scope.max_nodes:  # before building each step: the checks below grow with it
        raise WorkflowError(path, [f"steps: {len(spec.steps)} steps; the limit is {scope.max_nodes}: merge some"])
    errors += _param_key_errors(spec.params)

    declared, problems = declare(spec.params)
    errors.extend(problems)
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
    try:
        valid = validate_plan(plan, scope.model_copy(update={"scripts_from_file": True}))
    except PlanInvalid as exc:
        raise WorkflowError(path, [str(e) for e in exc.errors]) from None
    return Workflow(name=spec.name, description=spec.description, schedule=spec.schedule, path=path, plan=valid,
                    workspace=workspace, params=declared, values=values)


def check_step_files(workflow: Workflow, workspace: Path, settings: Settings | None = None, *,
                     skip_blank: bool = False) -> None:
    """Read every step's `files:` as its run will (in `workspace`, for the run's model), or raise
    `WorkflowError` naming each step whose file cannot be used and why. The readings are kept,
    so the steps then get them without reading again (see `engine.attachments`). `skip_blank`:
    a check without every param leaves out files a missing param (its blank stand-in) names."""
    from foreman.engine.attachments import prepare_attachments

    errors = []
    for step in workflow.plan.plan.tasks:
        files = [f for f in step.files if f.strip() or not skip_blank]
        if not files:
            continue
        try:
            prepare_attachments(files, settings=settings, workspace=workspace)
        except ForemanError as exc:  # every way a file is refused: format, size, place, vision, setup
            errors.append(f"{step.id}.files: {exc}")
    if errors:
        raise WorkflowError(workflow.path, errors)


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
    head = {"name": folder.name.lower().replace("_", "-"), "description": f"Scripts in {folder.name}"}
    header = ("# Generated by `foreman workflow init`: one step per script, chained in name order.\n"
              "# Edit depends_on, add conditions (e.g. `condition: collect.count > 0`), agent steps and\n"
              "# approval points, then check it with `foreman workflow check FILE`.\n")
    # commented out: a schedule runs by itself once deployed, so it is something to choose, not a default
    schedule = ("# schedule: {cron: \"0 3 * * *\", timezone: UTC}   # uncomment to run daily once deployed\n"
                "#                                                (deploy with --schedule-on to switch it on)\n")
    return (header + yaml.safe_dump(head, sort_keys=False) + schedule
            + yaml.safe_dump({"on_failure": "fail_fast", "steps": steps}, sort_keys=False))
