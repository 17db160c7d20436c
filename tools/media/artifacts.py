"""Show an image Foreman made (a chart) on the flow run that made it, as a Prefect artifact.

An image artifact whose URL is the PNG itself (a `data:` URL: the Prefect server needs no
access to the workspace, and the picture stays with the run), described by where the
file was kept. Outside a flow or task run there is nothing to attach to, and nothing is made.
"""

from __future__ import annotations

import base64
import re
from uuid import UUID

MAX_ARTIFACT_PNG_BYTES = 2 * 1024 * 1024  # the server keeps it in its database


def in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(name: str) -> str:
    """Prefect keys are lowercase letters, digits and dashes."""
    return ("chart-" + re.sub(r"[^a-z0-9-]+", "-", name.lower())).strip("-")[:100]


def publish_png(png: bytes, *, name: str, kept_at: str | None) -> UUID | None:
    """An image artifact of `png` on the current run; None outside a run or when too large."""
    if not in_run() or len(png) > MAX_ARTIFACT_PNG_BYTES:
        return None
    from prefect.artifacts import create_image_artifact

    where = f"saved in the workspace as `{kept_at}`" if kept_at else "not saved (the run may not write files)"
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return create_image_artifact(image_url=url, key=artifact_key(name),
                                 description=f"Chart **{name}**, {where}.")
