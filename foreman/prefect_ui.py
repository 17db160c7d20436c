"""Links into the Prefect UI that open the page a person needs, in the UI the server shows by default.

Prefect 3.8 serves two UIs: V1 at `/` and V2 at `/v2`. A deep link such as
`/runs/flow-run/<id>` always opens V1 (only the bare `/` redirects to the default), and V1
shows the plan's Mermaid graph as raw text. The server says which UI is its default, and
where each lives, at `<ui>/ui-settings`; links follow that, and fall back to V2 (the
default of the Prefect this project pins) when the server cannot be asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import BaseModel


class UIBase(BaseModel):
    """Where the server's default UI lives."""

    url: str
    version: str


def _configured_ui_url() -> str | None:
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return str(settings.ui_url).rstrip("/") if settings.api.url and settings.ui_url else None


@lru_cache(maxsize=8)
def _detect(ui_url: str) -> UIBase:
    import httpx

    parts = urlsplit(ui_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.path.rstrip("/").endswith("/v2"):  # PREFECT_UI_URL set to the V2 UI itself
        return UIBase(url=ui_url, version="v2")
    try:
        found = httpx.get(f"{ui_url}/ui-settings", timeout=3.0).json()
        version = found.get("default_ui") or "v1"
        base = found.get(f"{version}_base_url") or ("/v2" if version == "v2" else "/")
        return UIBase(url=origin + "/" + base.strip("/") if base.strip("/") else origin, version=version)
    except (httpx.HTTPError, ValueError, AttributeError):
        return UIBase(url=f"{ui_url}/v2", version="v2")


def ui_base() -> UIBase | None:
    """The default UI of the server PREFECT_API_URL names; None on a temporary server."""
    ui_url = _configured_ui_url()
    return _detect(ui_url) if ui_url else None


def run_url(run_id: str | None) -> str | None:
    """The flow run's own page (not the runs list)."""
    base = ui_base()
    return f"{base.url}/runs/flow-run/{run_id}" if base and run_id else None


def artifact_url(artifact_id: object) -> str | None:
    """One artifact's page, e.g. the full text of a result an approval form previews."""
    base = ui_base()
    return f"{base.url}/artifacts/artifact/{artifact_id}" if base and artifact_id else None


@contextmanager
def prefect_links_to_default_ui() -> Iterator[None]:
    """While a run starts here: Prefect's own "View at ..." line links the default UI too.

    Prefect builds that link from PREFECT_UI_URL, which defaults to the V1 UI; a value the
    person set is left alone."""
    from prefect.settings import PREFECT_UI_URL, get_current_settings, temporary_settings

    base = ui_base()
    if base is None or "ui_url" in get_current_settings().model_fields_set:
        yield
        return
    with temporary_settings(updates={PREFECT_UI_URL: base.url}):
        yield
