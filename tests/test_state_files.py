"""A damaged runs.sqlite3 / audit.sqlite3 is a StateFileError naming the file and the fix.

SQLite itself only says "file is not a database", naming no file; `foreman audit` crashed
with a traceback.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foreman.engine.store import RunStore
from foreman.errors import ConfigurationError, StateFileError, exit_code
from foreman.tools.audit import AuditLog, AuditRecord

GARBAGE = b"this is not a database\n" * 200
FOREMAN = Path(sys.executable).parent / "foreman"


@pytest.mark.parametrize(("store", "name"), [(RunStore, "runs.sqlite3"), (AuditLog, "audit.sqlite3")])
def test_a_garbage_file_is_named_with_what_to_do(tmp_path: Path, store: type, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(GARBAGE)
    with pytest.raises(StateFileError) as info:
        store(path)
    message = str(info.value)
    assert message.startswith(f"{path}: damaged or not a SQLite database")
    assert f"mv {path} {path}.damaged" in message and "file is not a database" in message
    assert info.value.path == path
    assert isinstance(info.value, ConfigurationError) and exit_code(info.value) == 2


def test_damage_found_on_first_use_after_opening_is_named_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = AuditLog(path)
    for _ in range(100):
        log.record(AuditRecord(tool="read_file", outcome="ok", detail="x" * 500))
    with path.open("r+b") as f:  # keep the header, break the pages behind it
        f.seek(2 * 4096)
        f.write(b"\xff" * 4 * 4096)
    with pytest.raises(StateFileError, match="damaged or not a SQLite database.*malformed"):
        log.recent_runs()


def test_other_sqlite_errors_keep_their_type(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite3")
    with pytest.raises(sqlite3.OperationalError), log._connect() as db:
        db.execute("SELECT nothing FROM nowhere")  # a bug in a query is not a damaged file


def test_foreman_audit_names_the_damaged_file_without_a_traceback(tmp_path: Path) -> None:
    """Needs the CLI's one-line printing of ForemanError (foreman/cli), as well as StateFileError."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "audit.sqlite3").write_bytes(GARBAGE)
    env = {**os.environ, "FOREMAN_HOME": str(home), "COLUMNS": "300"}
    out = subprocess.run([str(FOREMAN), "audit", "some-run"], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    output = out.stdout + out.stderr
    assert "Traceback" not in output and "╭" not in output, output  # neither plain nor rich tracebacks
    assert str(home / "audit.sqlite3") in output and out.returncode == 2, output


def test_foreman_decisions_names_the_damaged_file(foreman_home: Path) -> None:
    from foreman.cli import app

    foreman_home.mkdir(parents=True, exist_ok=True)
    (foreman_home / "audit.sqlite3").write_bytes(GARBAGE)
    out = CliRunner().invoke(app, ["decisions"], terminal_width=300)
    assert out.exit_code == 2 and str(foreman_home / "audit.sqlite3") in out.output, out.output
