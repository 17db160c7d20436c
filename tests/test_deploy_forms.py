"""Deployment forms: what the Prefect UI offers a person, read from the schemas Prefect builds (no server)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from prefect.utilities.callables import parameter_schema

from foreman.flows.file_search import file_search
from foreman.flows.planner import plan_and_run
from foreman.flows.workflow import load_for_deploy, run_workflow, workflow_flow

INTERNALS = {"plan", "resume", "approve_in"}


@pytest.mark.parametrize("flow", [plan_and_run, run_workflow, file_search], ids=lambda f: f.name)
def test_each_form_has_words_and_no_internals(flow) -> None:
    for schema in (flow.parameters, parameter_schema(flow)):  # to_deployment/serve, and `prefect deploy`
        fields = schema.model_dump_for_openapi()["properties"]
        assert not INTERNALS & set(fields)
        for name, field in fields.items():
            assert field["title"] != name and field.get("description"), (flow.name, name)


def test_python_callers_keep_every_parameter() -> None:
    assert INTERNALS <= set(inspect.signature(plan_and_run.fn).parameters)
    assert {"resume", "approve_in"} <= set(inspect.signature(run_workflow.fn).parameters)


def test_the_form_defaults_are_the_flows_defaults() -> None:
    real = inspect.signature(plan_and_run.fn).parameters
    for name, field in plan_and_run.parameters.properties.items():
        if "default" in field:
            assert field["default"] == real[name].default, name
    assert plan_and_run.parameters.required == ["objective"]


def test_a_workflows_form_fixes_its_path_and_types_its_params(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "workflow.yaml").write_text("""\
name: disk
params:
  mount: {type: str, default: /srv, description: The disk to check}
  limit: {type: int, default: 80, description: Percent full that raises an alert}
  loud: false
steps:
  - {id: a, script: a.py}
""")
    schema = parameter_schema(workflow_flow(load_for_deploy(tmp_path / "workflow.yaml")))
    path, params = schema.properties["path"], schema.properties["params"]
    assert path["readOnly"] and path["default"] == str((tmp_path / "workflow.yaml").resolve())
    typed = schema.definitions[params["$ref"].split("/")[-1]]["properties"]
    assert {k: v["type"] for k, v in typed.items()} == {"mount": "string", "limit": "integer", "loud": "boolean"}
    assert typed["limit"]["description"] == "Percent full that raises an alert" and typed["limit"]["default"] == 80
    assert params["default"] == {"mount": "/srv", "limit": 80, "loud": False}


def test_a_required_param_is_a_required_field(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "workflow.yaml").write_text("name: need\nparams: {target: {type: str}}\nsteps:\n  - {id: a, script: a.py}\n")
    schema = parameter_schema(workflow_flow(load_for_deploy(tmp_path / "workflow.yaml")))
    assert "params" in schema.required
    assert schema.definitions[schema.properties["params"]["$ref"].split("/")[-1]]["required"] == ["target"]


def test_the_shipped_examples_have_typed_forms() -> None:
    from foreman.flows import examples

    for flow, field in ((examples.log_pipeline, "min_errors"), (examples.content_pipeline, "topic")):
        schema = parameter_schema(flow)
        assert schema.properties["path"]["default"].startswith("workflows/")
        [definition] = schema.definitions.values()
        assert field in definition["properties"]
