"""A workflow file's misspelt or repeated keys, and a file in the wrong encoding, are errors.

`aproval: true` used to leave the step without an approval point while `workflow check`
said ok; a key given twice kept the last value silently. Both change what runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from foreman.agents.registry import registry
from foreman.cli import app
from foreman.engine.cf_runner import build_scope
from foreman.engine.policy import RunPolicy
from foreman.engine.workflow import WorkflowError, load_workflow

runner = CliRunner()


def scope():
    return build_scope(registry, RunPolicy.build(check_workspace=False))


def write(tmp_path: Path, text: str | bytes) -> Path:
    (tmp_path / "a.py").write_text("print(1)\n")
    path = tmp_path / "wf.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def errors_of(path: Path) -> str:
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, scope())
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nsteps:\n  - {id: deploy, script: a.py, aproval: true}\n",
         "wf.yaml: steps[0] (deploy).aproval: unknown key; did you mean approval?"),
        ("name: x\nsteps:\n  - {id: a, script: a.py}\n  - {id: b, script: a.py, depends_on: [a], condtion: a > 1}\n",
         "wf.yaml: steps[1] (b).condtion: unknown key; did you mean condition?"),
        ("name: x\nsteps:\n  - id: a\n    script: {path: a.py, arg: [--all]}\n",
         "wf.yaml: steps[0] (a).script.arg: unknown key; did you mean args?"),
        ("name: x\nschedul: {cron: '0 3 * * *'}\nsteps:\n  - {id: a, script: a.py}\n",
         "wf.yaml: schedul: unknown key; did you mean schedule?"),
        ("name: x\nschedule: {cron: '0 3 * * *', timezon: Europe/Berlin}\nsteps:\n  - {id: a, script: a.py}\n",
         "wf.yaml: schedule.timezon: unknown key; did you mean timezone?"),
        ("name: x\nparams:\n  limit: {type: int, defualt: 3}\nsteps:\n  - {id: a, script: a.py}\n",
         "wf.yaml: params.limit.defualt: unknown key; did you mean default?"),
    ],
)
def test_an_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in errors_of(write(tmp_path, text))


def test_every_unknown_key_of_every_step_is_listed(tmp_path: Path) -> None:
    text = errors_of(write(tmp_path, "name: x\nsteps:\n  - {id: a, script: a.py, zzzz: 1, retires: 2}\n"
                                     "  - {id: b, script: a.py, aproval: true}\n"))
    assert "steps[0] (a).zzzz: unknown key; known keys: id, title" in text  # nothing close: the list
    assert "steps[0] (a).retires: unknown key; did you mean retries?" in text
    assert "steps[1] (b).aproval: unknown key; did you mean approval?" in text


def test_a_key_given_twice_names_where_and_both_lines(tmp_path: Path) -> None:
    text = errors_of(write(tmp_path, """name: x
steps:
  - id: a
    script: a.py
  - id: b
    script:
      path: a.py
      path: b.py
    approval: true
    approval: false
name: y
"""))
    assert "wf.yaml: steps[1] (b).approval: given twice (lines 9 and 10); YAML keeps only the last one" in text
    assert "wf.yaml: steps[1] (b).script.path: given twice (lines 7 and 8)" in text
    assert "wf.yaml: name: given twice (lines 1 and 11)" in text


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsteps:\n  - &base {id: a, script: a.py, retries: 1}\n"
                           "  - {<<: *base, id: b, retries: 2}\n")
    workflow = load_workflow(path, scope())
    assert workflow.plan.plan.task("b").retries == 2


def test_a_file_that_is_not_utf8_names_the_byte_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndescription: Caf\u00e9 chores\nsteps:\n  - {id: a, script: a.py}\n"
                 .encode("latin-1"))
    text = errors_of(path)
    assert str(path) in text
    assert "not UTF-8: byte 24 (line 2) is 0xe9" in text and "save the file as UTF-8" in text


def test_workflow_check_refuses_them_instead_of_saying_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsteps:\n  - {id: deploy, script: a.py, aproval: true}\n")
    out = runner.invoke(app, ["workflow", "check", str(path)], terminal_width=200)
    assert out.exit_code != 0, out.output
    assert "did you mean approval?" in " ".join(out.output.split())  # rich wraps long lines

    path.write_bytes(b"name: x\ndescription: \xff\nsteps:\n  - {id: a, script: a.py}\n")
    out = runner.invoke(app, ["workflow", "check", str(path)], terminal_width=200)
    assert out.exit_code != 0 and "save the file as UTF-8" in " ".join(out.output.split())
    assert not isinstance(out.exception, UnicodeDecodeError)


def test_a_correct_file_still_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nschedule: {cron: '0 3 * * *', timezone: UTC}\n"
                           "params:\n  limit: {type: int, default: 3, description: at most}\n"
                           "steps:\n  - id: a\n    script: {path: a.py, args: ['${limit}'], env: {A: b}}\n"
                           "    approval: true\n    ask: Which?\n")
    workflow = load_workflow(path, scope())
    assert workflow.plan.plan.task("a").approval and workflow.plan.plan.task("a").script.args == ["3"]


def test_a_huge_workflow_is_refused_by_its_size_before_its_steps_are_built(tmp_path: Path) -> None:
    steps = "".join(f"  - {{id: s{i}, agent: generalist, instructions: x}}\n" for i in range(30_000))
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nsteps:\n" + steps)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)))
    assert info.value.errors == ["steps: 30000 steps; the limit is 25: merge some"]
