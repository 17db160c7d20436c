"""Charts an agent draws with matplotlib, run inside the code sandbox, kept as PNG files.

The agent writes ordinary matplotlib code (`plt.bar(...)`, no `savefig` needed). It runs
with `run_python`'s sandbox and limits, plus one thing: matplotlib and its dependencies
(and nothing else from the environment) are mounted read-only and put on `sys.path`.
Every figure left open at the end is saved as PNG inside the sandbox and passed back on
stdout (base64 after a per-run marker), so the sandbox needs no writable host folder.
Foreman then writes the PNGs into the workspace (`charts/`) through the file tools'
guarded writer, and `artifacts` shows them on the flow run.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import secrets
import sysconfig
from functools import cache
from pathlib import Path

from pydantic import BaseModel

from foreman.errors import ToolRefused
from foreman.tools.code import CodeLimits, choose_sandbox, run_python
from foreman.tools.code_limits import CodeResult
from foreman.tools.sandbox import Sandbox

# matplotlib and what it imports; nothing else of the environment is shown to the snippet.
CHART_DISTRIBUTIONS = ("matplotlib", "numpy", "pillow", "contourpy", "cycler", "fonttools",
                       "kiwisolver", "packaging", "pyparsing", "python-dateutil", "six")
SANDBOX_SITE = "/opt/foreman-chart-site"
MAX_FIGURES = 8
MAX_PNG_BYTES = 4 * 1024 * 1024
# matplotlib's import and first draw take a few seconds and more memory than a stdlib snippet.
MIN_TIMEOUT_S, MIN_CPU_S, MIN_MEMORY_MB = 60.0, 60, 1024

PRELUDE = """\
import os, sys
sys.path.insert(0, {site!r})
os.environ.update(MPLBACKEND="Agg", MPLCONFIGDIR=os.path.join(os.getcwd(), ".mpl"),
                  OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
exec(compile({source!r}, "<chart>", "exec"), {{"__name__": "__main__", "plt": plt}})
import base64, io
for _n in plt.get_fignums()[:{max_figures}]:
    _buf = io.BytesIO()
    plt.figure(_n).savefig(_buf, format="png", dpi=100, bbox_inches="tight")
    print({marker!r} + base64.b64encode(_buf.getvalue()).decode("ascii"), flush=True)
"""


class ChartRun(BaseModel):
    """What the snippet printed (markers removed), and the PNGs of its figures."""

    pngs: list[bytes]
    stdout: str
    stderr: str
    exit_code: int
    isolation: str


@cache
def _top_level(site: str) -> tuple[str, ...]:
    """The top-level files and folders of the chart distributions in `site` (and their metadata)."""
    names: set[str] = set()
    for dist_name in CHART_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(dist_name)
        for file in dist.files or ():
            first = Path(file).parts[0]
            if first not in ("..", "__pycache__") and (Path(site) / first).exists():
                names.add(first)
    return tuple(sorted(names))


def _mounts(kind: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The sys.path entry the snippet gets, and the read-only mounts that make it hold."""
    site = sysconfig.get_path("purelib")
    if kind != "bwrap":
        return site, ()  # unshare / none see the host's files anyway
    binds = tuple((f"{site}/{name}", f"{SANDBOX_SITE}/{name}") for name in _top_level(site))
    if Path("/etc/fonts").is_dir():  # fontconfig's own settings, read by matplotlib's font search
        binds += (("/etc/fonts", "/etc/fonts"),)
    return SANDBOX_SITE, binds


def chart_limits(limits: CodeLimits) -> CodeLimits:
    """The run's code limits, raised to what importing matplotlib needs, output room for PNGs."""
    return limits.model_copy(update={
        "timeout_s": max(limits.timeout_s, MIN_TIMEOUT_S),
        "cpu_s": max(limits.cpu_s, MIN_CPU_S),
        "memory_mb": max(limits.memory_mb, MIN_MEMORY_MB),
        "max_output_bytes": max(limits.max_output_bytes, MAX_FIGURES * MAX_PNG_BYTES * 2),
    })


def run_chart(source: str, limits: CodeLimits, *, sandbox: Sandbox = "auto") -> ChartRun:
    """Run matplotlib code in the sandbox; the figures it leaves open come back as PNG bytes."""
    kind = choose_sandbox(sandbox)
    site, binds = _mounts(kind)
    marker = f"@@foreman-chart-{secrets.token_hex(8)}@@"
    program = PRELUDE.format(site=site, source=source, marker=marker, max_figures=MAX_FIGURES)
    result: CodeResult = run_python(program, chart_limits(limits), sandbox=kind, ro_binds=binds)
    pngs, lines = [], []
    for line in result.stdout.splitlines():
        if line.startswith(marker):
            try:
                pngs.append(base64.b64decode(line[len(marker):], validate=True))
            except binascii.Error:
                continue  # cut short by the output cap
        else:
            lines.append(line)
    return ChartRun(pngs=[p for p in pngs if p.startswith(b"\x89PNG") and len(p) <= MAX_PNG_BYTES],
                    stdout="\n".join(lines), stderr=result.stderr, exit_code=result.exit_code,
                    isolation=result.isolation)


def require_figures(run: ChartRun) -> list[bytes]:
    """The PNGs, or ToolRefused telling the agent what went wrong (its error, or no figure)."""
    if run.exit_code != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-8:])
        raise ToolRefused("make_chart", f"the chart code failed (exit {run.exit_code}):\n{tail}\n"
                                        "fix the code; matplotlib is available as plt, numpy as numpy")
    if not run.pngs:
        raise ToolRefused("make_chart", "the code drew no figure; draw with plt (e.g. plt.bar(labels, values)) "
                                        "and leave the figure open (no plt.close())")
    return run.pngs
