"""Counting table rows in Python for a "how many" question (engine/tables.py), on the demo notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from foreman.engine.tables import count_rows
from foreman.tools.knowledge.search import Passage

DEMO = Path(__file__).resolve().parent.parent / "demo" / "workspace"


def found(*paths: str, text: str = "") -> list[Passage]:
    return [Passage(base="b", path=p, line_start=1, line_end=1, text=text, score=1.0) for p in paths]


def test_a_markdown_table_is_counted_by_the_value_the_question_names() -> None:
    # hosts.csv comes first and has a pve2 row, but it lists hosts, not VMs: the VM table counts
    counted = count_rows("How many VMs run on pve2?", found("inventory/hosts.csv", "notes/proxmox.md"), DEMO)
    assert counted is not None and counted.count == 3 and counted.where == {"node": "pve2"}
    assert counted.rows == ["101 dev-debian", "102 win11", "105 pbs-test"]
    assert counted.line.startswith('notes/proxmox.md (counted by Foreman): 3 rows where node is "pve2"')


def test_a_csv_row_with_an_unquoted_comma_still_counts_in_its_column() -> None:
    counted = count_rows("How many hosts does Priya own?", found("inventory/hosts.csv"), DEMO)
    assert counted is not None and counted.where == {"owner": "Priya"}
    assert [row.split()[0] for row in counted.rows] == ["nas01", "media01", "ha01"]


@pytest.mark.parametrize("question", [
    "How many reallocated sectors does disk sdc have?",  # no table: a lookup or the planner
    "How many hosts are there?",  # no value named: the planner decides what to count
    "How many hosts does pve2 have?",  # a key column (one row per host) is not a count
    "Which hosts are in the basement rack?",  # not a count at all
])
def test_what_is_not_a_certain_row_count_is_left_to_the_planner(question: str) -> None:
    assert count_rows(question, found("notes/nas.md", "inventory/hosts.csv"), DEMO) is None


def test_without_the_file_only_the_passage_lines_are_read_and_paths_cannot_leave_the_root(tmp_path: Path) -> None:
    table = "## VMs\n| id | node |\n|---|---|\n| 1 | a |\n| 2 | a |\n| 3 | b |"
    counted = count_rows("How many VMs run on a?", found("vms.md", text=table), None)
    assert counted is not None and counted.count == 2
    assert count_rows("How many VMs run on a?", found("../outside.md", text=""), tmp_path) is None
