"""The media tools agents are given: draw a chart, speak a text. Registered in the catalogue.

`make_chart` runs matplotlib code in the code sandbox (capability run_code), keeps each
figure as `charts/<name>.png` when the run may write, and shows it on the flow run as an
image artifact either way, so a drawn chart is never lost. `speak_text` writes a wav
(capability write_files).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from pydantic import BaseModel

from foreman.errors import ToolRefused
from foreman.tools.code import CodeLimits
from foreman.tools.media import artifacts, charts, speech
from foreman.tools.media.save import write_bytes
from foreman.tools.workspace import Workspace

CHART_FOLDER = "charts"


class ChartOutput(BaseModel):
    files: list[str]  # workspace paths, empty when the run may not write
    artifact_ids: list[str]
    stdout: str
    note: str


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name.strip()).strip("-")[:60]
    if not slug:
        raise ToolRefused("make_chart", "give the chart a name of letters, digits and dashes, e.g. 'disk-usage'")
    return slug


def make_chart(ws: Workspace, limits: CodeLimits, source: str, name: str) -> ChartOutput:
    """Draw with matplotlib in the sandbox; keep and show every figure the code leaves open."""
    slug = _slug(name)
    run = charts.run_chart(source, limits)
    pngs = charts.require_figures(run)
    files, ids = [], []
    for index, png in enumerate(pngs, start=1):
        label = slug if len(pngs) == 1 else f"{slug}-{index}"
        kept = write_bytes(ws, f"{CHART_FOLDER}/{label}.png", png, "make_chart") if ws.allow_write else None
        if kept:
            files.append(kept)
        artifact = artifacts.publish_png(png, name=label, kept_at=kept)
        if artifact:
            ids.append(str(artifact))
    note = (f"saved {', '.join(files)}" if files else "not saved: this run may not write files") + (
        "; shown on the flow run as image artifact(s)" if ids else "")
    return ChartOutput(files=files, artifact_ids=ids, stdout=run.stdout[-2000:], note=note)


def speak_text(ws: Workspace, text: str, path: str) -> dict:
    """Speak `text` with espeak-ng into the workspace wav file `path`."""
    with tempfile.TemporaryDirectory(prefix="foreman-speak-") as tmp:
        out = Path(tmp) / "speech.wav"
        result = speech.speak(text, out, tool="speak_text")
        kept = write_bytes(ws, path, out.read_bytes(), "speak_text")
    return {"path": kept, "seconds": result.seconds, "bytes": result.bytes}
