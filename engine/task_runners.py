"""Where a flow runs its plan nodes: one setting, the thread pool or a Dask cluster.

    FOREMAN_TASK_RUNNER=threads        # default: a pool of FOREMAN_TASK_THREADS in the flow's process
    FOREMAN_TASK_RUNNER=dask           # prefect-dask: a LocalCluster of FOREMAN_DASK_WORKERS processes
    FOREMAN_DASK_ADDRESS=tcp://h:8786  # ... or a Dask cluster that already runs (several machines)

Why a setting and not code: the engine submits each ready sub-task to the flow's task
runner (`Engine._start`), so where nodes run is the flow's decision alone, and a homelab
owner who outgrows one process should change an environment variable, not a decorator.

What crosses to a Dask worker process is the node's Prefect task (cloudpickled with the
runner it closes over) and its plain-data arguments; what comes back is its result. Tools
open their guards and the audit log (SQLite under FOREMAN_HOME, WAL, one connection per
write) in the worker, so every call is recorded in the same file whichever process made
it, provided the workers share FOREMAN_HOME (local processes inherit the environment; on
other machines, give them the same FOREMAN_* settings and a shared home). Prefect task
runs report to the same API from the worker (PREFECT_API_URL must reach it from there).
"""

from __future__ import annotations

import logging

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from foreman.errors import ConfigurationError
from foreman.settings import Settings, get_settings


def task_runner(settings: Settings | None = None) -> TaskRunner:
    """The task runner FOREMAN_TASK_RUNNER names, built from the settings in force now.

    Prefect duplicates a flow's task runner for each flow run, so one built at import time
    starts a fresh pool (or local cluster) per run."""
    settings = settings or get_settings()
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.task_threads)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover  (pinned in pyproject; a trimmed install)
        raise ConfigurationError("FOREMAN_TASK_RUNNER=dask needs prefect-dask: "
                                 "reinstall with ./install.sh (it is in requirements.lock)") from exc
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": settings.dask_workers,
        "threads_per_worker": settings.task_threads,
        "processes": True,            # real processes: nodes do not share the flow's memory
        "dashboard_address": ":0",    # its web dashboard on a free port, never a fixed one
        "silence_logs": logging.ERROR,  # its own INFO chatter, not the nodes' logs
    })


def describe(settings: Settings | None = None) -> str:
    """One line for logs: where this run's nodes go."""
    settings = settings or get_settings()
    if settings.task_runner == "threads":
        return f"threads ({settings.task_threads} at once)"
    if settings.dask_address:
        return f"dask cluster at {settings.dask_address}"
    return f"local dask cluster ({settings.dask_workers} processes x {settings.task_threads} threads)"
