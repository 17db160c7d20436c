"""run_python: no network, no secrets, no escape from the temp folder, and hard limits.

Runs real subprocesses in the sandbox this machine offers. The bwrap-only tests are
skipped where bubblewrap is missing or cannot start (e.g. a container without namespaces).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from foreman.tools import code, sandbox
from foreman.tools.code import (
    CodeLimits,
    isolation_report,
    run_python,
    sandbox_python,
    sandbox_works,
)

LIMITS = CodeLimits(timeout_s=5, cpu_s=5, memory_mb=256, max_output_bytes=10_000)
NET_SANDBOXES = [kind for kind in ("bwrap", "unshare") if sandbox_works(kind)]
ALL_SANDBOXES = [*NET_SANDBOXES, "none"]
needs_bwrap = pytest.mark.skipif(not sandbox_works("bwrap"), reason="bubblewrap is not usable here")

CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    print("connected")
except OSError as exc:
    print("blocked", type(exc).__name__)
"""


@pytest.fixture()
def listener() -> Iterator[tuple[int, list[object]]]:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_from_settings() -> None:
    settings = SimpleNamespace(
        code_timeout_s=3.0, code_cpu_s=2, code_memory_mb=100, code_max_output_bytes=50
    )
    assert CodeLimits.from_settings(settings) == CodeLimits(
        timeout_s=3.0, cpu_s=2, memory_mb=100, max_output_bytes=50
    )
    settings.code_disk_mb = 8
    assert CodeLimits.from_settings(settings).disk_mb == 8
    assert CodeLimits.from_settings(settings).shm_mb == 8  # /dev/shm: never more than disk_mb


def test_runs_code_and_reports_output_and_exit_code() -> None:
    result = run_python(
        "import sys\nprint('hi')\nprint('oops', file=sys.stderr)\nsys.exit(3)", LIMITS
    )
    assert (result.stdout, result.stderr.strip(), result.exit_code) == ("hi\n", "oops", 3)
    assert not result.timed_out and not result.truncated


@pytest.mark.skipif(not NET_SANDBOXES, reason="no network sandbox (bwrap/unshare) works here")
@pytest.mark.parametrize("kind", NET_SANDBOXES)
def test_network_is_blocked(kind: str, listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    # Control: without a sandbox the same code reaches the server, so the test can fail.
    assert run_python(CONNECT.format(port=port), LIMITS, sandbox="none").stdout.startswith(
        "connected"
    )
    assert len(accepted) == 1
    result = run_python(CONNECT.format(port=port), LIMITS, sandbox=kind)
    assert result.stdout.startswith("blocked"), result
    assert len(accepted) == 1
    assert "no network" in result.isolation


def test_auto_picks_a_network_sandbox_when_one_works() -> None:
    result = run_python("pass", LIMITS)
    if NET_SANDBOXES:
        assert result.isolation.startswith(NET_SANDBOXES[0])
    else:
        assert result.isolation.startswith("NO SANDBOX")


def test_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("FOREMAN_API_KEY", "foreman-secret")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    result = run_python("import json, os; print(json.dumps(dict(os.environ)))", LIMITS)
    env = json.loads(result.stdout)
    assert "sk-test-secret" not in result.stdout and "foreman-secret" not in result.stdout
    assert {"OPENAI_API_KEY", "FOREMAN_API_KEY", "PYTHONPATH"}.isdisjoint(env)
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "PWD", "LC_CTYPE"}


def test_project_packages_are_not_importable() -> None:
    result = run_python("import foreman", LIMITS)
    assert result.exit_code == 1 and "ModuleNotFoundError" in result.stderr


def test_timeout_kills_an_infinite_loop() -> None:
    limits = LIMITS.model_copy(update={"timeout_s": 1.0, "cpu_s": 30})
    started = time.monotonic()
    result = run_python(
        "import time\nprint('start', flush=True)\nwhile True: time.sleep(0.1)", limits
    )
    assert time.monotonic() - started < 4
    assert result.timed_out and result.exit_code == -9
    assert result.stdout == "start\n"  # output before the kill is kept
    assert "longer than 1s" in result.stderr


def _processes_with(token: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if token in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(entry.name)
        except OSError:
            continue
    return found


@pytest.mark.parametrize("kind", [*NET_SANDBOXES, "none"])
def test_timeout_also_kills_child_processes(kind: str) -> None:
    limits = LIMITS.model_copy(update={"timeout_s": 1.0})
    token = f"foreman-child-{os.getpid()}-{kind}"
    source = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {token!r}])\n"
        "p.wait()\n"
    )
    started = time.monotonic()
    result = run_python(source, limits, sandbox=kind)
    assert result.timed_out and time.monotonic() - started < 4
    deadline = time.monotonic() + 2  # the kernel reaps asynchronously
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(token) == []


def test_cpu_limit_stops_a_busy_loop() -> None:
    limits = LIMITS.model_copy(update={"cpu_s": 1, "timeout_s": 10})
    started = time.monotonic()
    result = run_python("while True: pass", limits)
    assert time.monotonic() - started < 5
    assert not result.timed_out and result.exit_code < 0
    assert "CPU" in result.stderr


def test_memory_limit_stops_a_big_allocation() -> None:
    limits = LIMITS.model_copy(update={"memory_mb": 128})
    result = run_python("x = bytearray(512 * 1024 * 1024)\nprint('allocated')", limits)
    assert "allocated" not in result.stdout
    assert result.exit_code != 0 and "MemoryError" in result.stderr
    # A modest allocation under the limit still works.
    assert run_python("x = bytearray(16 * 1024 * 1024); print('ok')", limits).stdout == "ok\n"


def test_output_is_capped_and_marked() -> None:
    limits = LIMITS.model_copy(update={"max_output_bytes": 1_000})
    result = run_python("import sys\nprint('x' * 200_000)\nsys.stderr.write('e' * 5_000)", limits)
    assert result.truncated and result.exit_code == 0
    assert result.stdout.startswith("x" * 1_000)
    assert len(result.stdout) < 1_100 and "truncated at 1000 bytes" in result.stdout
    assert len(result.stderr) < 1_100 and "truncated" in result.stderr


def test_working_dir_is_a_fresh_temp_dir_that_is_removed() -> None:
    source = (
        "import os, tempfile\n"
        "open('made.txt', 'w').write('x')\n"
        "print(os.getcwd()); print(os.listdir('.')); print(os.environ['HOME'])"
    )
    result = run_python(source, LIMITS)
    cwd, listing, home = result.stdout.splitlines()
    assert Path(cwd).name.startswith("foreman-code-") and home == cwd
    assert listing == "['made.txt']"  # it started empty
    assert not Path(cwd).exists()
    assert run_python("import os; print(os.getcwd())", LIMITS).stdout.strip() != cwd


@needs_bwrap
def test_bwrap_cannot_write_or_read_host_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.env"
    secret.write_text("OPENAI_API_KEY=sk-host-secret")
    target = tmp_path / "planted.txt"
    source = f"""
import os
for path in ({str(target)!r}, "/usr/planted.txt", "/planted.txt"):
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, type(exc).__name__)
try:
    print(open({str(secret)!r}).read())
except OSError as exc:
    print("hidden", type(exc).__name__)
print(sorted(os.listdir("/")))
"""
    result = run_python(source, LIMITS, sandbox="bwrap")
    assert "wrote" not in result.stdout, result
    assert "sk-host-secret" not in result.stdout and "hidden FileNotFoundError" in result.stdout
    assert not target.exists() and not Path("/usr/planted.txt").exists()
    assert "home" not in result.stdout and "work" not in result.stdout


@needs_bwrap
def test_bwrap_drops_privileges() -> None:
    source = "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])"
    assert run_python(source, LIMITS, sandbox="bwrap").stdout.strip() == "0" * 16


def test_isolation_report_says_what_is_and_is_not_isolated() -> None:
    report = isolation_report()
    assert "Not isolated" in report
    expected = NET_SANDBOXES[0] if NET_SANDBOXES else "none"
    assert f"sandbox on this machine: {expected}" in report


def test_forcing_a_missing_sandbox_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "sandbox_works", lambda kind: kind == "none")
    with pytest.raises(RuntimeError, match="bubblewrap"):
        run_python("pass", LIMITS, sandbox="bwrap")
    assert run_python("pass", LIMITS).isolation.startswith("NO SANDBOX")


def test_no_sandbox_run_is_still_limited_and_says_so() -> None:
    result = run_python("import os; print(os.getcwd())", LIMITS, sandbox="none")
    assert "NO SANDBOX" in result.isolation
    assert Path(result.stdout.strip()).name.startswith("foreman-code-")


# --- what the attack run found: memory outside the limit, site-packages, killing Foreman ---

SMALL_DISK = LIMITS.model_copy(update={"disk_mb": 8})

FILL = """
import os
def fill(folder, name):
    written = 0
    try:
        for i in range(300):  # 300 files of 1 MB: each under the per-file cap
            with open(os.path.join(folder, f"{name}{i}"), "wb") as f:
                f.write(b"x" * (1 << 20))
            written += 1
    except OSError as exc:
        return f"{written} {exc.strerror}"
    return f"{written} done"
"""


def _filled(result: code.CodeResult) -> dict[str, tuple[int, str]]:
    """'folder MB how' lines from FILL scripts, as {folder: (MB, how)}."""
    rows = [line.split(" ", 2) for line in result.stdout.splitlines()]
    return {folder: (int(mb), how) for folder, mb, how in rows}


@needs_bwrap
def test_bwrap_dev_shm_is_a_small_capped_tmpfs() -> None:
    source = (
        FILL
        + """
print("/dev/shm", fill("/dev/shm", "s"))
try:
    open("/dev/planted", "w")
    print("/dev 1 writable")
except OSError as exc:
    print("/dev 0", exc.strerror)
"""
    )
    started = time.monotonic()
    result = run_python(source, SMALL_DISK, sandbox="bwrap")
    assert time.monotonic() - started < 10
    filled = _filled(result)
    assert filled["/dev/shm"] == (8, "No space left on device"), result  # not 300 MB of RAM
    assert filled["/dev"] == (0, "Read-only file system")  # the rest of /dev cannot be filled
    assert "/dev/shm (8 MB tmpfs)" in result.isolation


@needs_bwrap
def test_bwrap_work_dir_and_tmp_share_one_capped_tmpfs() -> None:
    source = (
        FILL
        + """
print(".", fill(".", "w"))
print("/tmp", fill("/tmp", "t"))
print("x", os.statvfs(".").f_blocks * os.statvfs(".").f_frsize // (1 << 20), "MB")
"""
    )
    result = run_python(source, SMALL_DISK, sandbox="bwrap")
    filled = _filled(result)
    # 8 MB in all, not 300 MB of host disk: the work folder took it, /tmp had none left.
    assert filled["."] == (8, "No space left on device"), result
    assert filled["/tmp"] == (0, "No space left on device")
    assert filled["x"] == (8, "MB")
    assert "the working folder and /tmp (8 MB tmpfs, shared)" in result.isolation


@needs_bwrap
def test_bwrap_without_tmpfs_sizes_binds_the_host_folder_and_closes_dev_shm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An older bwrap without --size: no unbounded tmpfs is mounted in place of a capped one.
    monkeypatch.setattr(sandbox, "_bwrap_has_size", lambda: False)
    source = (
        FILL
        + """
print("/dev/shm", fill("/dev/shm", "s"))
open("made.txt", "w").write("x")
print("cwd 1", os.listdir("."))
"""
    )
    result = run_python(source, SMALL_DISK, sandbox="bwrap")
    filled = _filled(result)
    assert filled["/dev/shm"] == (0, "Read-only file system"), result
    assert filled["cwd"] == (1, "['made.txt']")
    assert "lacks --size" in result.isolation


@functools.cache
def _base_has(module: str) -> bool:
    """Whether the base interpreter would import `module` with its normal sys.path."""
    done = subprocess.run(
        [str(sandbox_python()), "-I", "-c", f"import {module}"], capture_output=True, check=False
    )
    return done.returncode == 0


IMPORTS = """
import sys
for name in ("yaml", "pydantic", "json", "sqlite3", "ctypes", "asyncio"):
    try:
        __import__(name)
        print(name, "ok")
    except ImportError:
        print(name, "missing")
print("site-packages on path:", any("-packages" in p for p in sys.path))
"""


@pytest.mark.parametrize("kind", ALL_SANDBOXES)
def test_only_the_standard_library_is_importable(kind: str) -> None:
    if not (_base_has("yaml") and _base_has("pydantic")):
        pytest.skip("the base interpreter has no yaml/pydantic to hide here")
    result = run_python(IMPORTS, LIMITS, sandbox=kind)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["yaml missing", "pydantic missing"], result
    assert lines[2:6] == ["json ok", "sqlite3 ok", "ctypes ok", "asyncio ok"]
    assert lines[6] == "site-packages on path: False"


@needs_bwrap
def test_bwrap_hides_site_packages_even_when_put_back_on_sys_path() -> None:
    site_dirs = code._site_dirs(sandbox_python())
    if not site_dirs or not _base_has("yaml"):
        pytest.skip("the base interpreter has no site-packages with yaml to hide")
    source = f"import os, sys\nsys.path[:0] = {[str(d) for d in site_dirs]!r}\n"
    source += f"print(os.listdir({str(site_dirs[0])!r}))\n" + IMPORTS
    result = run_python(source, LIMITS, sandbox="bwrap")
    assert result.stdout.startswith("[]\nyaml missing\npydantic missing\n"), result


STAND_IN = """
import importlib.util, sys
# Load the very module under test, as Foreman would use it.
spec = importlib.util.spec_from_file_location("code_under_test", sys.argv[1])
code = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = code
spec.loader.exec_module(code)
limits = code.CodeLimits(timeout_s=5, cpu_s=5, memory_mb=256, max_output_bytes=1000)
result = code.run_python("import os\\nos.kill(os.getppid(), 9)", limits, sandbox=sys.argv[2])
print("foreman survived; the snippet's run ended", result.exit_code)
"""


@pytest.mark.parametrize("kind", ALL_SANDBOXES)
def test_killing_its_parent_does_not_kill_foreman(kind: str) -> None:
    # A stand-in Foreman process runs the snippet, so a regression fails this test
    # instead of killing the test run itself.
    done = subprocess.run(
        [sys.executable, "-c", STAND_IN, code.__file__, kind],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"the stand-in Foreman died ({done.returncode}): {done.stderr}"
    assert "foreman survived" in done.stdout


@pytest.mark.skipif("unshare" not in NET_SANDBOXES, reason="unshare does not work here")
def test_unshare_code_cannot_see_or_signal_host_processes() -> None:
    if not code._unshare_pid_ns():
        pytest.skip("unshare cannot make a pid namespace here")
    source = f"""
import os
try:
    os.kill({os.getpid()}, 0)
    print("can signal foreman")
except ProcessLookupError:
    print("foreman is invisible")
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
"""
    result = run_python(source, LIMITS, sandbox="unshare")
    assert result.stdout.splitlines() == ["foreman is invisible", "[1, 2]"], result
    assert "own pid namespace" in result.isolation


@pytest.mark.parametrize("kind", ALL_SANDBOXES)
def test_exit_codes_and_signal_deaths_pass_through_the_supervisor(kind: str) -> None:
    assert run_python("import sys; sys.exit(7)", LIMITS, sandbox=kind).exit_code == 7
    killed = run_python("import os; os.kill(os.getpid(), 15)", LIMITS, sandbox=kind)
    assert killed.exit_code == -15 and not killed.timed_out
