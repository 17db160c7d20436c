"""File tools stay inside the workspace, say clearly when they refuse, and write safely."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from foreman.errors import ToolRefused
from foreman.tools import files
from foreman.tools.files import Workspace


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "notes").mkdir(parents=True)
    (ws / "notes" / "a.txt").write_text("alpha\nBeta line\ngamma\n")
    (ws / "todo.txt").write_text("buy milk\nfix BETA bug\n")
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("beta secret\n")
    (ws / ".env").write_text("OPENAI_API_KEY=beta\n")
    (tmp_path / "outside.txt").write_text("outside beta\n")
    return ws


@pytest.fixture()
def ws(root: Path) -> Workspace:
    return Workspace(root=root, max_read_bytes=1_000)


def test_from_settings_uses_workspace_and_read_cap(root: Path) -> None:
    settings = SimpleNamespace(workspace=root / "notes" / "..", file_max_read_bytes=123)
    ws = Workspace.from_settings(settings)
    assert ws.root == root.resolve()
    assert ws.max_read_bytes == 123
    assert ws.allow_write is False
    assert ws.allow_hardlinks is False
    allowing = SimpleNamespace(workspace=root, file_max_read_bytes=1, file_allow_hardlinks=True)
    assert Workspace.from_settings(allowing).allow_hardlinks is True


def test_hardlink_setting_is_off_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from foreman.settings import Settings

    assert Settings().file_allow_hardlinks is False
    monkeypatch.setenv("FOREMAN_FILE_ALLOW_HARDLINKS", "true")
    assert Settings().file_allow_hardlinks is True


@pytest.mark.parametrize("bad", ["../outside.txt", "notes/../../outside.txt", "/etc/passwd"])
def test_paths_outside_the_root_are_refused(ws: Workspace, bad: str) -> None:
    with pytest.raises(ToolRefused) as info:
        files.read_file(ws, bad)
    assert "paths are relative to the workspace root" in str(info.value)
    assert str(ws.root) in str(info.value)


def test_absolute_path_inside_root_and_inner_dotdot_are_fine(ws: Workspace) -> None:
    assert files.read_file(ws, str(ws.root / "todo.txt")).startswith("buy milk")
    assert files.read_file(ws, "notes/../todo.txt").startswith("buy milk")


def test_symlink_to_outside_is_refused_anywhere_along_the_path(ws: Workspace, root: Path) -> None:
    outside_dir = root.parent / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "secret.txt").write_text("secret")
    (root / "link_file").symlink_to(root.parent / "outside.txt")
    (root / "link_dir").symlink_to(outside_dir)
    for path in ("link_file", "link_dir/secret.txt"):
        with pytest.raises(ToolRefused, match="symlink"):
            files.read_file(ws, path)
    # Nor can a write go through the directory link.
    writable = ws.model_copy(update={"allow_write": True})
    with pytest.raises(ToolRefused):
        files.write_file(writable, "link_dir/new.txt", "x")
    assert not (outside_dir / "new.txt").exists()


def test_symlink_inside_root_is_followed(ws: Workspace, root: Path) -> None:
    (root / "alias.txt").symlink_to(root / "todo.txt")
    assert files.read_file(ws, "alias.txt").startswith("buy milk")


def test_list_files_is_recursive_sorted_and_skips_hidden_and_escaping_links(
    ws: Workspace, root: Path
) -> None:
    (root / "escape.txt").symlink_to(root.parent / "outside.txt")
    assert files.list_files(ws) == ["notes/a.txt", "todo.txt"]
    assert files.list_files(ws, "notes") == ["notes/a.txt"]


def test_list_files_caps_with_a_note(
    ws: Workspace, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "LIST_MAX_ENTRIES", 3)
    for i in range(5):
        (root / f"f{i}.txt").write_text("x")
    listed = files.list_files(ws)
    assert len(listed) == 4
    assert "4 more files" in listed[-1]


def test_list_files_of_a_missing_folder_says_what_to_do(ws: Workspace) -> None:
    with pytest.raises(NotADirectoryError, match="list_files"):
        files.list_files(ws, "nope")


def test_workspace_paths_and_dirs_are_real_and_limited(ws: Workspace, root: Path) -> None:
    (root / "notes" / "deep").mkdir()
    assert files.workspace_paths(ws) == ["notes/a.txt", "todo.txt"]
    assert files.workspace_paths(ws, limit=1) == ["notes/a.txt"]
    assert files.workspace_dirs(ws) == [".", "notes", "notes/deep"]
    assert files.workspace_dirs(ws, limit=2) == [".", "notes"]


def test_read_file_truncates_large_files_with_a_marker(ws: Workspace, root: Path) -> None:
    (root / "big.txt").write_text("é" * 1_000)  # 2000 bytes; the cut splits a character
    text = files.read_file(ws, "big.txt")
    body, marker = text.split("\n[... truncated", 1)
    assert body == "é" * 500
    assert "first 1000 of 2000 bytes" in marker


def test_read_file_refuses_binary_and_non_utf8(ws: Workspace, root: Path) -> None:
    (root / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (root / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ToolRefused, match="binary"):
        files.read_file(ws, "img.png")
    with pytest.raises(ToolRefused, match="not UTF-8"):
        files.read_file(ws, "latin.txt")


def test_read_file_missing_or_folder_explains(ws: Workspace) -> None:
    with pytest.raises(FileNotFoundError, match="list_files"):
        files.read_file(ws, "missing.txt")
    with pytest.raises(IsADirectoryError, match="list_files"):
        files.read_file(ws, "notes")


def test_search_is_case_insensitive_with_line_numbers_and_skips_hidden(ws: Workspace) -> None:
    assert files.search_files(ws, "beta") == [
        {"path": "notes/a.txt", "line_number": 2, "line": "Beta line"},
        {"path": "todo.txt", "line_number": 2, "line": "fix BETA bug"},
    ]
    assert files.search_files(ws, "beta", directory="notes") == [
        {"path": "notes/a.txt", "line_number": 2, "line": "Beta line"}
    ]


def test_search_caps_matches_and_refuses_empty_query(
    ws: Workspace, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "SEARCH_MAX_MATCHES", 2)
    (root / "many.txt").write_text("hit\n" * 10)
    found = files.search_files(ws, "HIT")
    assert len(found) == 3 and "note" in found[-1]
    with pytest.raises(ToolRefused, match="empty"):
        files.search_files(ws, "  ")
    with pytest.raises(ToolRefused):
        files.search_files(ws, "beta", directory="..")


def test_write_is_refused_unless_allowed(ws: Workspace, root: Path) -> None:
    with pytest.raises(ToolRefused, match="writing is off"):
        files.write_file(ws, "new.txt", "hello")
    assert not (root / "new.txt").exists()


def test_write_creates_parents_atomically_and_keeps_mode(ws: Workspace, root: Path) -> None:
    writable = ws.model_copy(update={"allow_write": True})
    message = files.write_file(writable, "out/deep/report.md", "# Report\n")
    assert (root / "out" / "deep" / "report.md").read_text() == "# Report\n"
    assert "out/deep/report.md" in message
    os.chmod(root / "todo.txt", 0o600)
    files.write_file(writable, "todo.txt", "replaced")
    assert (root / "todo.txt").read_text() == "replaced"
    assert (root / "todo.txt").stat().st_mode & 0o777 == 0o600
    # No temporary files are left behind.
    assert not [p for p in root.rglob(".foreman-*")]


def test_write_refuses_escapes_git_folders_and_oversize(ws: Workspace, root: Path) -> None:
    writable = ws.model_copy(update={"allow_write": True, "max_write_bytes": 10})
    with pytest.raises(ToolRefused, match="workspace root"):
        files.write_file(writable, "../evil.txt", "x")
    assert not (root.parent / "evil.txt").exists()
    with pytest.raises(ToolRefused, match=".git"):
        files.write_file(writable, ".git/hooks/pre-commit", "x")
    with pytest.raises(ToolRefused, match="at most 10 bytes"):
        files.write_file(writable, "big.txt", "x" * 11)
    assert not (root / "big.txt").exists()


def test_missing_root_explains_how_to_fix(tmp_path: Path) -> None:
    ws = Workspace(root=tmp_path / "absent", max_read_bytes=10)
    with pytest.raises(FileNotFoundError, match="FOREMAN_WORKSPACE"):
        files.list_files(ws)


def test_hidden_paths_named_directly_are_refused_by_every_tool(ws: Workspace) -> None:
    writable = ws.model_copy(update={"allow_write": True})
    calls = [
        lambda: files.read_file(ws, ".env"),
        lambda: files.read_file(ws, "notes/../.git/config"),
        lambda: files.list_files(ws, ".git"),
        lambda: files.search_files(ws, "beta", directory=".git"),
        lambda: files.write_file(writable, ".env", "x"),
    ]
    for call in calls:
        with pytest.raises(ToolRefused, match="hidden") as info:
            call()
        assert "name a visible path" in str(info.value)


def test_a_symlink_loop_does_not_break_listings_or_schemas(
    ws: Workspace, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    (root / "notes" / "self").symlink_to("self")
    (root / "gone").symlink_to("nowhere")
    caplog.set_level("WARNING", logger="foreman.tools.files")
    assert files.list_files(ws) == ["notes/a.txt", "todo.txt"]
    assert files.workspace_paths(ws) == ["notes/a.txt", "todo.txt"]
    assert files.workspace_dirs(ws) == [".", "notes"]
    assert len(files.search_files(ws, "beta")) == 2
    assert "symlink loop" in caplog.text and "dangling symlink" in caplog.text
    with pytest.raises(ToolRefused, match="symlink loop"):
        files.read_file(ws, "a")
    with pytest.raises(ToolRefused, match="does not exist"):
        files.read_file(ws, "gone")


def test_hardlinked_files_are_refused_naming_the_setting(ws: Workspace, root: Path) -> None:
    os.link(root.parent / "outside.txt", root / "linked.txt")
    with pytest.raises(ToolRefused, match="FOREMAN_FILE_ALLOW_HARDLINKS=true"):
        files.read_file(ws, "linked.txt")
    assert "linked.txt" not in files.list_files(ws)
    assert not [m for m in files.search_files(ws, "outside") if "path" in m]
    allowed = ws.model_copy(update={"allow_hardlinks": True})
    assert files.read_file(allowed, "linked.txt") == "outside beta\n"


@pytest.mark.timeout(10)
def test_fifos_and_sockets_are_refused_without_hanging(ws: Workspace, root: Path) -> None:
    import stat

    os.mkfifo(root / "pipe")
    os.mknod(root / "sock", stat.S_IFSOCK | 0o600)
    with pytest.raises(ToolRefused, match="fifo, not a regular file"):
        files.read_file(ws, "pipe")
    with pytest.raises(ToolRefused, match="socket"):
        files.read_file(ws, "sock")
    assert files.list_files(ws) == ["notes/a.txt", "todo.txt"]
    assert len(files.search_files(ws, "beta")) == 2
    writable = ws.model_copy(update={"allow_write": True})
    with pytest.raises(ToolRefused, match="only regular files can be written"):
        files.write_file(writable, "pipe", "x")


def test_write_through_an_inside_symlink_writes_its_target(ws: Workspace, root: Path) -> None:
    (root / "alias.txt").symlink_to("todo.txt")
    (root / "notes_link").symlink_to(root / "notes")
    writable = ws.model_copy(update={"allow_write": True})
    assert files.write_file(writable, "alias.txt", "new todo") == "Wrote 8 bytes to todo.txt."
    assert (root / "alias.txt").is_symlink() and (root / "todo.txt").read_text() == "new todo"
    assert "notes/b.txt" in files.write_file(writable, "notes_link/b.txt", "b")
    assert (root / "notes" / "b.txt").read_text() == "b"


def test_listing_a_symlinked_folder_inside_lists_its_real_paths(ws: Workspace, root: Path) -> None:
    (root / "notes_link").symlink_to("notes")
    assert files.list_files(ws, "notes_link") == ["notes/a.txt"]
    assert files.list_files(ws) == ["notes/a.txt", "todo.txt"]  # the link itself is not entered


def test_a_folder_swapped_for_a_symlink_after_the_walk_is_not_followed(
    ws: Workspace, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deterministic version of the race: the swap lands between lstat and open."""
    outside_dir = root.parent / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "a.txt").write_text("outside secret")
    real_open = os.open

    def swapping_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == "notes" and not (root / "notes").is_symlink():
            (root / "notes").rename(root / "notes.real")
            (root / "notes").symlink_to(outside_dir)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", swapping_open)
    with pytest.raises(ToolRefused, match="symlink"):
        files.read_file(ws, "notes/a.txt")
