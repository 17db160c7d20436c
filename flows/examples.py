"""The example workflows as deployable flows, each with its own form in the Prefect UI.

`prefect deploy --all` draws a deployment's form from its entrypoint's signature, so the
shipped `log-pipeline` and `content-pipeline` deployments (prefect.yaml) point here: the
same run-workflow flow, with the file's path fixed and its `params:` block as typed fields
(a number is a number field, each with its description), instead of a raw JSON box.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect loads this file by path)

# isort: split

from foreman.flows.workflow import load_for_deploy, workflow_flow
from foreman.settings import REPO_ROOT

LOG_PIPELINE = "workflows/log_pipeline/workflow.yaml"
CONTENT_PIPELINE = "workflows/content_pipeline/workflow.yaml"

log_pipeline = workflow_flow(load_for_deploy(REPO_ROOT / LOG_PIPELINE), LOG_PIPELINE)
content_pipeline = workflow_flow(load_for_deploy(REPO_ROOT / CONTENT_PIPELINE), CONTENT_PIPELINE)
