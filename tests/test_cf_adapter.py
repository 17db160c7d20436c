"""The ControlFlow adapter: version check, one canary per patch, ControlFlow's internal names.

A canary runs ControlFlow *as shipped* and expects the bug its patch fixes. When a canary
fails after an upgrade, upstream fixed the bug: drop the patch.
"""

from __future__ import annotations

import inspect

import controlflow as cf
import pytest
from controlflow.orchestration.orchestrator import Orchestrator
from controlflow.tasks.task import Labels, Task
from prefect.utilities.collections import visit_collection

from foreman import cf_adapter
from foreman.cf_adapter import names, patches
from foreman.errors import ConfigurationError


def test_apply_checks_the_pinned_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    cf_adapter.check_versions()  # the installed pins pass
    monkeypatch.setattr(cf_adapter, "version", lambda package: {"controlflow": "0.13.0"}.get(package, "3.8.8"))
    with pytest.raises(ConfigurationError, match=r"controlflow 0\.13\.0 is installed.*supports controlflow 0\.12\.1"):
        cf_adapter.check_versions()
    monkeypatch.setattr(cf_adapter, "version", lambda package: {"prefect": "3.9.1"}.get(package, "0.12.1"))
    with pytest.raises(ConfigurationError, match=r"prefect 3\.9\.1 is installed.*prefect 3\.8\.x"):
        cf_adapter.check_versions()


def _walk(value: object) -> object:
    return visit_collection(value, visit_fn=lambda x: x, return_data=True)


def test_canary_choice_results_still_crash_prefects_parameter_walk_without_the_patch() -> None:
    cf_adapter.apply()
    choices = Labels(root=("red", "blue"))
    with patches.unpatched(), pytest.raises((ValueError, TypeError)):
        _walk({"result": choices})
    assert _walk({"result": choices})  # patched: the walk goes through


def test_canary_a_finished_task_is_still_marked_failed_without_the_patch() -> None:
    cf_adapter.apply()
    with patches.unpatched():
        task = Task("say hi", result_type=str)
        task.mark_successful("hi")
        task.mark_failed("Max LLM calls reached for this task.")
        assert task.is_failed()  # upstream bug: a success turned into a failure
    task = Task("say hi", result_type=str)
    task.mark_successful("hi")
    task.mark_failed("Max LLM calls reached for this task.")
    assert task.is_successful() and task.result == "hi"


def test_a_patch_refuses_a_controlflow_of_another_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    cf_adapter.apply()
    with patches.unpatched():
        monkeypatch.setattr(Labels, "keys", lambda self: ("root",), raising=False)
        with pytest.raises(ConfigurationError, match="ControlFlow changed shape.*Labels already defines keys"):
            patches.apply_patches()
        monkeypatch.delattr(Labels, "keys")


def test_controlflow_still_uses_the_internal_names_foreman_relies_on() -> None:
    task = cf.Task("anything", result_type=str)
    success, failure = task.get_success_tool().name, task.get_fail_tool().name
    assert names.is_success_tool(success) and names.task_id_of(success) == task.id
    assert names.is_failure_tool(failure) and names.is_completion_tool(failure)
    assert names.OUT_OF_CALLS_REASON in inspect.getsource(Orchestrator)
