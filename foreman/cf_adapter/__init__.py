"""Everything Foreman does to ControlFlow, and the one call that does it.

ControlFlow 0.12.1 is archived; Foreman runs it on Prefect 3.8 and needs, in one place:

- `patches`: two upstream bugs fixed (choice results under Prefect, a last-call success
  marked failed), each with a canary test proving the bug is still there;
- `speedups`: ControlFlow's per-turn Prefect bookkeeping cut (see its docstring for what
  that buys and what you lose; `FOREMAN_CF_TASK_RUNS=true` restores it);
- `taskrun`: how one ControlFlow task runs as a Foreman step (private history, budgets,
  honest failure);
- `handlers`: the audit of out-of-scope tool calls, the run log, usage counting;
- `names`: ControlFlow's internal names (completion tools, its out-of-calls reason);
- `images`: an attached image counted as an image when ControlFlow trims a thread, not as
  its base64 (which would drop it).

`apply()` checks the installed versions first and refuses others with a clear message,
because every patch here depends on ControlFlow's and Prefect's internals.
"""

from __future__ import annotations

import threading
from importlib.metadata import version

from foreman.errors import ConfigurationError

SUPPORTED = {"controlflow": ("0.12.1",), "prefect": ("3.8.",)}
_lock = threading.Lock()
_applied = False


def check_versions() -> None:
    """Refuse a ControlFlow or Prefect this adapter was not written for."""
    for package, accepted in SUPPORTED.items():
        found = version(package)
        if not any(found == v or (v.endswith(".") and found.startswith(v)) for v in accepted):
            wanted = " or ".join(v + ("x" if v.endswith(".") else "") for v in accepted)
            raise ConfigurationError(
                f"{package} {found} is installed; Foreman's ControlFlow adapter supports {package} {wanted}. "
                "Install the versions in requirements.lock (./install.sh does)")


def apply() -> None:
    """Check versions, apply the patches and the configured speedups. Idempotent, thread-safe."""
    global _applied
    if _applied:
        return
    with _lock:
        if _applied:
            return
        check_versions()
        from foreman.cf_adapter.patches import apply_patches
        from foreman.cf_adapter.speedups import apply_speedups
        from foreman.settings import get_settings

        apply_patches()
        from foreman.cf_adapter.images import apply_image_token_count

        apply_image_token_count()
        stock = get_settings().cf_task_runs
        apply_speedups(nested_task_runs=stock, artifacts=stock, flow_heartbeat_join=stock)
        _applied = True
