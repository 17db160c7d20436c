"""What a command checks before any flow run exists, so bad input never becomes a Failed run.

Each check calls the code the flow itself runs first (the same policy, loader, store), so
the CLI refuses exactly what the run would have failed on, without a run, a notification
or a traceback. Called inside `preflight()`: every refusal is one line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from foreman.cli._output import check_server
from foreman.errors import ConfigurationError

if TYPE_CHECKING:
    from foreman.engine.workflow import Workflow


def check_model() -> None:
    """A model setting that cannot work (missing key, unknown provider, no endpoint)."""
    from foreman.agents.models import check_model_settings
    from foreman.settings import get_settings

    check_model_settings(get_settings())


def check_resume(resume: str | None) -> None:
    """`--resume KEY` names a run this machine's store knows."""
    if resume is not None:
        from foreman.engine.runs import run_key_for
        from foreman.engine.store import run_store

        run_key_for(resume, "", run_store())


def check_planner_run(*, workspace: Path | None, allow_write: bool, allow_code: bool, resume: str | None,
                      budgets: dict[str, Any], knowledge_bases: list[str] | None = None) -> None:
    """Everything `plan_and_run` checks before it plans, and the server it will run on."""
    from foreman.engine.policy import RunPolicy
    from foreman.engine.records import Budgets
    from foreman.tools.knowledge.service import require_bases

    check_model()
    policy = RunPolicy.build(workspace=workspace, allow_write=allow_write, allow_code=allow_code)
    if knowledge_bases:
        policy.with_bases(require_bases(knowledge_bases))
    Budgets(**budgets)
    check_resume(resume)
    check_server()


def check_workflow_run(file: Path, values: dict[str, str], *, workspace: Path | None, allow_write: bool,
                       allow_code: bool, resume: str | None) -> Workflow:
    """The file, its params, its workspace, the run's permissions, the model (if a step needs one), the server."""
    from foreman.flows.workflow import prepare_workflow

    workflow, _ = prepare_workflow(file, values or None, workspace=workspace, allow_write=allow_write,
                                   allow_code=allow_code)
    if any(t.script is None for t in workflow.plan.plan.tasks):
        check_model()
    check_resume(resume)
    check_server()
    return workflow


def check_search(directory: Path | None) -> Path:
    from foreman.flows.file_search import search_root

    root = search_root(str(directory) if directory else None)
    check_model()
    check_server()
    return root


def check_work_pool(pool: str) -> None:
    """`foreman workflow deploy` needs the work pool a worker serves."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    check_server()
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise ConfigurationError(f"work pool {pool!r} does not exist on this server; create it once with "
                                     f"`prefect work-pool create {pool} --type process`") from None
