"""The attack corpus against the workspace file tools, as tests.

Each path is refused with a message that says what is allowed, or handled safely (a
literal name that does not exist, or the inside file it really names). Whatever happens,
nothing outside the workspace is read (the marker never shows) or created. The race test
flips a workspace folder between a real folder and a symlink out while the tools run.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from foreman.errors import ToolRefused
from foreman.tools import files
from foreman.tools.files import Workspace

MARK = "OUTSIDE-MARKER-93f1"  # in every file outside the workspace, in none inside


@dataclass
class World:
    tmp: Path
    root: Path
    ws: Workspace

    @property
    def writable(self) -> Workspace:
        return self.ws.model_copy(update={"allow_write": True})


def _build(tmp: Path) -> World:
    root = tmp / "ws"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("alpha\n")
    (root / "notes" / ".secret").write_text("hidden in notes\n")
    (root / "todo.txt").write_text("buy milk\n")
    (root / ".env").write_text("API_KEY=hidden-secret\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".hidden_dir").mkdir()
    (root / ".hidden_dir" / "f.txt").write_text("hidden dir file\n")
    (tmp / "outside.txt").write_text(f"{MARK} file\n")
    (tmp / "outside").mkdir()
    (tmp / "outside" / "secret.txt").write_text(f"{MARK} in dir\n")
    (tmp / "ws-sibling").mkdir()
    (tmp / "ws-sibling" / "secret.txt").write_text(f"{MARK} sibling\n")
    links = {
        "alias.txt": str(root / "todo.txt"),  # absolute, inside: followed
        "notes/rel_alias": "../todo.txt",  # relative, inside: followed
        "in_dir": "notes",
        "out_file": str(tmp / "outside.txt"),
        "out_rel": "../outside.txt",
        "out_dir": str(tmp / "outside"),
        "notes/up": "../../outside",
        "chain_out": "out_file",  # inside link to an outside link
        "proc_root": "/proc/self/root",
        "proc_cwd": "/proc/self/cwd",
        "proc_in": f"/proc/self/root{root}",  # really inside, but only via a magic link
        "dangling": str(root / "nothing-here"),
        "dangling_rel": "missing/also-missing",
        "dangling_dir": "ghost",
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "self_loop": "self_loop",
        "dot_loop": "./notes/../dot_loop",
        "loop_dir": "loop_dir/sub",
        "to_env": ".env",
        "to_git": ".git",
        "fifo_link": "fifo",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    os.link(tmp / "outside.txt", root / "hard.txt")
    os.link(tmp / "outside" / "secret.txt", root / "notes" / "hard2.txt")
    (root / "alias_hard").symlink_to("hard.txt")
    os.mkfifo(root / "fifo")
    os.mknod(root / "sock", stat.S_IFSOCK | 0o600)
    try:
        os.mknod(root / "null_dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pass  # no CAP_MKNOD here: that case skips
    return World(tmp, root, Workspace(root=root, max_read_bytes=10_000))


@pytest.fixture()
def world(tmp_path: Path) -> World:
    return _build(tmp_path)


def _snapshot(top: Path, skip: Path | None = None) -> dict[str, str]:
    """Every entry under `top` (links not followed), regular files with their contents."""
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if skip is not None:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            st = full.lstat()
            rel = str(full.relative_to(top))
            seen[rel] = full.read_text() if stat.S_ISREG(st.st_mode) else stat.filemode(st.st_mode)
    return seen


# (path, expectation, detail). {root} and {tmp} are filled in per test.
#   refused: ToolRefused whose message contains `detail` (case-insensitive)
#   missing: a literal name that does not exist (FileNotFoundError), i.e. handled safely
#   ok:      reads the inside file, whose text contains `detail`
CASES: list[tuple[str, str, str]] = [
    # every '..' form
    ("..", "refused", "outside the workspace"),
    ("../", "refused", "outside the workspace"),
    ("../outside.txt", "refused", "outside the workspace"),
    ("../outside/secret.txt", "refused", "outside the workspace"),
    ("a/../..", "refused", "outside the workspace"),
    ("a/../../outside.txt", "refused", "outside the workspace"),
    ("./../outside.txt", "refused", "outside the workspace"),
    ("./..", "refused", "outside the workspace"),
    ("a/b/../../../outside.txt", "refused", "outside the workspace"),
    ("notes/../../outside.txt", "refused", "outside the workspace"),
    ("notes/../..", "refused", "outside the workspace"),
    ("notes/../../", "refused", "outside the workspace"),
    ("../ws/../outside.txt", "refused", "outside the workspace"),
    ("..//outside.txt", "refused", "outside the workspace"),
    ("../../../../../../../etc/passwd", "refused", "outside the workspace"),
    ("../../../", "refused", "outside the workspace"),
    ("  ../outside.txt  ", "refused", "outside the workspace"),
    ("../ws-sibling/secret.txt", "refused", "outside the workspace"),
    # absolute paths elsewhere
    ("/etc/passwd", "refused", "outside the workspace"),
    ("/", "refused", "outside the workspace"),
    ("//etc/passwd", "refused", "outside the workspace"),
    ("{tmp}/outside.txt", "refused", "outside the workspace"),
    ("{root}/../outside.txt", "refused", "outside the workspace"),
    ("{root}-sibling/secret.txt", "refused", "outside the workspace"),
    ("{root}/notes/../../outside.txt", "refused", "outside the workspace"),
    ("/dev/zero", "refused", "outside the workspace"),
    ("/dev/null", "refused", "outside the workspace"),
    ("/proc/self/root/etc/passwd", "refused", "outside the workspace"),
    ("/proc/self/root{root}/todo.txt", "refused", "outside the workspace"),
    ("/proc/self/cwd", "refused", "outside the workspace"),
    ("/proc/self/cwd/README.md", "refused", "outside the workspace"),
    ("/proc/self/fd/0", "refused", "outside the workspace"),
    ("/proc/self/environ", "refused", "outside the workspace"),
    # '~' is never expanded
    ("~", "refused", "'~'"),
    ("~/.bashrc", "refused", "'~'"),
    ("~root/.ssh/id_rsa", "refused", "'~'"),
    # URL-encoded: literal names, nothing decodes them
    ("%2e%2e/outside.txt", "missing", ""),
    ("%2e%2e%2foutside.txt", "missing", ""),
    ("%252e%252e/outside.txt", "missing", ""),
    ("..%2foutside.txt", "refused", "hidden"),  # a name starting with '.'
    # unicode lookalikes: literal names, never normalised to '.' or '/'
    ("\uff0e\uff0e/outside.txt", "missing", ""),  # fullwidth full stops
    ("\u2024\u2024/outside.txt", "missing", ""),  # one dot leaders
    ("\u2025/outside.txt", "missing", ""),  # two dot leader
    ("\uff0e\uff0e\uff0foutside.txt", "missing", ""),  # fullwidth solidus
    ("notes\u2215a.txt", "missing", ""),  # division slash
    ("..\u2215outside.txt", "refused", "hidden"),
    # NUL bytes
    ("todo.txt\x00", "refused", "NUL"),
    ("\x00", "refused", "NUL"),
    ("../outside.txt\x00.txt", "refused", "NUL"),
    ("notes/\x00/../..", "refused", "NUL"),
    # backslashes
    ("..\\outside.txt", "refused", "backslash"),
    ("..\\..\\etc\\passwd", "refused", "backslash"),
    ("notes\\a.txt", "refused", "backslash"),
    ("\\etc\\passwd", "refused", "backslash"),
    # symlinks out (files and folders, absolute and relative, chained, via /proc)
    ("out_file", "refused", "symlink"),
    ("out_rel", "refused", "symlink"),
    ("out_dir", "refused", "symlink"),
    ("out_dir/secret.txt", "refused", "symlink"),
    ("notes/up/secret.txt", "refused", "symlink"),
    ("chain_out", "refused", "symlink"),
    ("proc_root/etc/passwd", "refused", "symlink"),
    ("proc_cwd/README.md", "refused", "symlink"),
    ("proc_in/todo.txt", "refused", "symlink"),
    # dangling symlinks
    ("dangling", "refused", "does not exist"),
    ("dangling_rel", "refused", "does not exist"),
    ("dangling_dir/x.txt", "refused", "does not exist"),
    # symlink loops
    ("loop_a", "refused", "loop"),
    ("loop_b", "refused", "loop"),
    ("self_loop", "refused", "loop"),
    ("loop_a/x.txt", "refused", "loop"),
    ("dot_loop", "refused", "loop"),
    ("loop_dir/x.txt", "refused", "loop"),
    # hardlinks to outside files
    ("hard.txt", "refused", "FOREMAN_FILE_ALLOW_HARDLINKS"),
    ("notes/hard2.txt", "refused", "FOREMAN_FILE_ALLOW_HARDLINKS"),
    ("alias_hard", "refused", "FOREMAN_FILE_ALLOW_HARDLINKS"),
    # hidden entries named directly (or through a visible link)
    (".env", "refused", "hidden"),
    (".git", "refused", "hidden"),
    (".git/config", "refused", "hidden"),
    ("notes/.secret", "refused", "hidden"),
    (".hidden_dir/f.txt", "refused", "hidden"),
    ("./.env", "refused", "hidden"),
    ("notes/../.env", "refused", "hidden"),
    ("{root}/.env", "refused", "hidden"),
    ("...", "refused", "hidden"),
    ("to_env", "refused", "hidden"),
    ("to_git/config", "refused", "hidden"),
    # device files, fifos (never opened: no hang), sockets
    ("fifo", "refused", "fifo"),
    ("fifo_link", "refused", "fifo"),
    ("sock", "refused", "socket"),
    ("null_dev", "refused", "character device"),
    # safe handling: the inside file the path really names
    ("todo.txt", "ok", "buy milk"),
    ("./todo.txt", "ok", "buy milk"),
    ("notes/../todo.txt", "ok", "buy milk"),
    ("notes//a.txt", "ok", "alpha"),
    ("notes/./a.txt", "ok", "alpha"),
    ("  todo.txt  ", "ok", "buy milk"),
    ("{root}/todo.txt", "ok", "buy milk"),
    ("{root}/notes/../todo.txt", "ok", "buy milk"),
    ("alias.txt", "ok", "buy milk"),
    ("notes/rel_alias", "ok", "buy milk"),
    ("in_dir/a.txt", "ok", "alpha"),
]


def _fill(world: World, path: str) -> str:
    return path.replace("{root}", str(world.root)).replace("{tmp}", str(world.tmp))


def _skip_if_absent(world: World, path: str) -> None:
    if path == "null_dev" and not (world.root / "null_dev").exists():
        pytest.skip("cannot create device nodes here")


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 60
    assert len({p for p, _, _ in CASES}) == len(CASES)


@pytest.mark.timeout(10)  # a fifo that were opened for reading would hang here
@pytest.mark.parametrize(("path", "expect", "detail"), CASES, ids=[repr(c[0]) for c in CASES])
def test_read_file_refuses_or_stays_inside(
    world: World, path: str, expect: str, detail: str
) -> None:
    _skip_if_absent(world, path)
    outside = _snapshot(world.tmp, skip=world.root)
    try:
        text = files.read_file(world.ws, _fill(world, path))
    except ToolRefused as exc:
        assert expect == "refused", f"unexpected refusal: {exc}"
        message = str(exc)
        assert detail.lower() in message.lower()
        assert "paths are relative to the workspace root" in message  # says what is allowed
        assert MARK not in message
    except FileNotFoundError as exc:
        assert expect == "missing", f"unexpected {exc!r}"
        assert "list_files" in str(exc)
    else:
        assert expect == "ok", f"read {text!r}"
        assert detail in text
        assert MARK not in text
    assert _snapshot(world.tmp, skip=world.root) == outside


def _write_expectation(expect: str, detail: str) -> str:
    # A hardlinked file is replaced, never written through; literal names are created inside.
    if expect == "refused" and "HARDLINKS" not in detail:
        return "refused"
    return "written"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("path", "expect", "detail"), CASES, ids=[repr(c[0]) for c in CASES])
def test_write_file_refuses_or_stays_inside(
    world: World, path: str, expect: str, detail: str
) -> None:
    _skip_if_absent(world, path)
    outside = _snapshot(world.tmp, skip=world.root)
    inside = _snapshot(world.root)
    want = _write_expectation(expect, detail)
    try:
        message = files.write_file(world.writable, _fill(world, path), "written by the test\n")
    except ToolRefused as exc:
        assert want == "refused", f"unexpected refusal: {exc}"
        assert MARK not in str(exc)
        assert _snapshot(world.root) == inside  # a refused write changes nothing (no mkdir)
    else:
        assert want == "written", message
        written = message.removeprefix("Wrote 20 bytes to ").removesuffix(".")
        assert (world.root / written).read_text() == "written by the test\n"
        assert not (world.root / written).is_symlink()
    assert _snapshot(world.tmp, skip=world.root) == outside
    assert not list(world.root.rglob(".foreman-*"))


DIRECTORY_CASES = [
    ("..", "outside the workspace"),
    ("../outside", "outside the workspace"),
    ("/", "outside the workspace"),
    ("/proc/self/root", "outside the workspace"),
    ("/proc/self/cwd", "outside the workspace"),
    ("{tmp}/outside", "outside the workspace"),
    ("~", "'~'"),
    ("out_dir", "symlink"),
    ("notes/up", "symlink"),
    ("proc_root", "symlink"),
    ("dangling_dir", "does not exist"),
    ("loop_a", "loop"),
    ("loop_dir", "loop"),
    (".git", "hidden"),
    (".hidden_dir", "hidden"),
    ("to_git", "hidden"),
    ("notes\\..\\..", "backslash"),
    ("\x00", "NUL"),
]


@pytest.mark.parametrize(
    ("directory", "detail"), DIRECTORY_CASES, ids=[repr(c[0]) for c in DIRECTORY_CASES]
)
@pytest.mark.parametrize("tool", ["list_files", "search_files"])
def test_listing_and_search_refuse_bad_folders(
    world: World, tool: str, directory: str, detail: str
) -> None:
    call: Any = (
        (lambda d: files.list_files(world.ws, d))
        if tool == "list_files"
        else (lambda d: files.search_files(world.ws, "marker", d))
    )
    with pytest.raises(ToolRefused) as info:
        call(_fill(world, directory))
    assert detail.lower() in str(info.value).lower()
    assert "workspace root" in str(info.value)


@pytest.mark.timeout(10)
def test_listings_skip_every_trap_and_search_never_leaks(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    readable = ["alias.txt", "in_dir", "notes/a.txt", "notes/rel_alias", "todo.txt"]
    caplog.set_level("WARNING", logger="foreman.tools.files")
    listed = files.list_files(world.ws)
    assert listed == [p for p in readable if p != "in_dir"]  # a linked folder is not entered
    assert files.workspace_paths(world.ws) == listed
    assert files.workspace_dirs(world.ws) == [".", "notes"]
    assert files.search_files(world.ws, MARK) == []
    assert files.search_files(world.ws, "secret") == []  # .env, .secret are hidden
    # skipped, not silently: loops, dangling links and hardlinks are named in the log
    logged = caplog.text
    for word in (
        "symlink loop",
        "dangling symlink",
        "symlink out of the workspace",
        "FOREMAN_FILE_ALLOW_HARDLINKS",
        "loop_a",
        "dangling_rel",
    ):
        assert word in logged


def test_hardlinks_are_read_only_when_the_setting_allows(world: World) -> None:
    allowed = world.ws.model_copy(update={"allow_hardlinks": True})
    assert MARK in files.read_file(allowed, "hard.txt")
    assert "hard.txt" in files.list_files(allowed)
    # Writing replaces the workspace name: the outside file keeps its contents.
    files.write_file(world.writable, "hard.txt", "replaced\n")
    assert (world.root / "hard.txt").read_text() == "replaced\n"
    assert (world.tmp / "outside.txt").read_text() == f"{MARK} file\n"


# --- the race ------------------------------------------------------------------------

FLIPPER = r"""
import ctypes, os, sys, time
folder, other, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
exchange = getattr(libc, "renameat2", None)
flips, end = 0, time.monotonic() + seconds
print("ready", flush=True)
while time.monotonic() < end:
    for _ in range(200):
        if exchange is not None:  # atomic: swap the folder and the symlink (RENAME_EXCHANGE)
            if exchange(-100, folder.encode(), -100, other.encode(), 2) != 0:
                raise OSError(ctypes.get_errno(), "renameat2")
        else:  # no renameat2: move the folder away and a symlink in, then back
            os.rename(folder, folder + ".real"); os.symlink(os.readlink(other), folder)
            os.unlink(folder); os.rename(folder + ".real", folder)
        flips += 1
print(flips, flush=True)
"""


def race(impl: ModuleType, root: Path, outside: Path, seconds: float = 3.0) -> dict[str, int]:
    """Call read_file / write_file on `root/d/...` while another process flips `root/d`
    between a real folder and a symlink to `outside`. Counts what happened; "leaked" and
    "created_outside" must stay 0. Takes the implementation so it can be run on old code."""
    (root / "d").mkdir()
    (root / "d" / "secret.txt").write_text("inside\n")
    (outside / "secret.txt").write_text(f"{MARK} raced\n")
    (root / ".flip").symlink_to(outside)
    ws = impl.Workspace(root=root, max_read_bytes=10_000, allow_write=True)
    flipper = subprocess.Popen(
        [sys.executable, "-c", FLIPPER, str(root / "d"), str(root / ".flip"), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    counts = {"reads": 0, "read_ok": 0, "writes": 0, "write_ok": 0, "refused": 0, "leaked": 0}
    try:
        assert flipper.stdout is not None and flipper.stdout.readline().strip() == "ready"
        i = 0
        while flipper.poll() is None:
            i += 1
            counts["reads"] += 1
            try:
                text = impl.read_file(ws, "d/secret.txt")
                counts["read_ok"] += 1
                counts["leaked"] += MARK in text
            except (ToolRefused, OSError, RuntimeError):
                counts["refused"] += 1
            if i % 2 == 0:
                counts["writes"] += 1
                try:
                    impl.write_file(ws, f"d/new-{i}.txt", "x")
                    counts["write_ok"] += 1
                except (ToolRefused, OSError, RuntimeError):
                    counts["refused"] += 1
        out, _ = flipper.communicate(timeout=10)
    finally:
        if flipper.poll() is None:
            flipper.kill()
            flipper.wait()
    counts["flips"] = int(out.strip() or 0)
    counts["created_outside"] = len([p for p in outside.iterdir() if p.name != "secret.txt"])
    return counts


@pytest.mark.timeout(30)
def test_a_folder_flipped_to_a_symlink_never_leaks_or_escapes(tmp_path: Path) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    counts = race(files, root, outside, seconds=3.0)
    assert counts["flips"] > 100 and counts["reads"] > 100, counts  # the race really ran
    assert counts["leaked"] == 0, counts
    assert counts["created_outside"] == 0, counts
    assert counts["read_ok"] + counts["write_ok"] > 0, counts  # and the tools still worked
    # Every write that succeeded landed in the real folder, inside.
    real = root / "d" if not (root / "d").is_symlink() else root / ".flip"
    assert len(list(real.glob("new-*.txt"))) == counts["write_ok"]
