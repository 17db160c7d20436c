"""Two facts chained (issue #25): the model splits the question once; each half takes its own
route (a lookup in the notes, a query over a table), the first half's value feeds the second.
The model is scripted and keeps what it was shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn
from foreman.engine.chain import SPLIT_SYSTEM, new_words

pytestmark = pytest.mark.usefixtures("foreman_home")

ROTA = """# On call

| week_starting | primary | secondary |
|---|---|---|
| 2026-12-07 | Noor | Kai |
| 2026-12-14 | Kai | Wren |
| 2026-12-21 | Wren | Noor |
"""
CERTS = """[
  {"domain": "api.example.org", "expires": "2026-12-17", "auto_renew": false},
  {"domain": "www.example.org", "expires": "2027-02-01", "auto_renew": true}
]
"""
OUTAGE = "# Outage\n\nThe storage outage was led by Wren Ito; it began at 09:10 and ended at 10:05.\n"
PEOPLE = "name,phone\nNoor Ali,+44 20 5550 0101\nKai Berg,+44 20 5550 0202\nWren Ito,+44 20 5550 0303\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "team"
    root.mkdir()
    (root / "oncall.md").write_text(ROTA)
    (root / "certificates.json").write_text(CERTS)
    (root / "outage.md").write_text(OUTAGE)
    (root / "people.csv").write_text(PEOPLE)
    return root


class Scripted:
    """Replies by what each call is for: the split, a query, or an answer from the notes."""

    def __init__(self, split: str, sql: list[str], answers: list[str]) -> None:
        self.split, self.sql, self.answers = split, list(sql), list(answers)
        self.prompts: list[str] = []
        self.model = ScriptedChatModel(responder=self.respond)

    def respond(self, turn: Turn) -> ScriptedReply:
        text = "\n".join(str(m.content) for m in turn.messages)
        self.prompts.append(text)
        if SPLIT_SYSTEM in text:
            return ScriptedReply(content=self.split)
        if "One SELECT that answers it" in text:
            return ScriptedReply(content=f"```sql\n{self.sql.pop(0)}\n```")
        return ScriptedReply(content=self.answers.pop(0))


@pytest.mark.usefixtures("prefect_server")
def test_a_date_from_one_table_picks_the_row_of_another(folder: Path) -> None:
    from foreman.flows.planner import plan_and_run

    model = Scripted(
        "FIRST: When does the api.example.org certificate expire?\nTHEN: Who is primary on call the week of [FIRST]?",
        ["SELECT expires FROM certificates WHERE domain = 'api.example.org'",
         "SELECT primary_ FROM oncall WHERE DATE '2026-12-17' BETWEEN week_starting AND week_starting + 6"],
        [])
    with use_model(model.model):
        result = plan_and_run("Who is primary on call the week the api.example.org certificate expires?",
                              workspace=str(folder))
    assert (result.route or "").startswith("chain"), result.route
    assert result.answer.startswith("Kai"), result.answer
    second_query = next(p for p in model.prompts if "the week of 2026-12-17" in p)
    assert "CREATE TABLE oncall" in second_query, "the value found first is in the second question"
    assert "certificates.json:2" in result.sources and "oncall.md:6" in result.sources
    assert result.llm_calls == 3 and result.statuses == {"chain": "COMPLETED"}


@pytest.mark.usefixtures("prefect_server")
def test_a_name_from_the_notes_is_looked_up_in_a_table(folder: Path) -> None:
    from foreman.flows.planner import plan_and_run

    model = Scripted("FIRST: Who led the storage outage?\nTHEN: What is the phone number of [FIRST]?",
                     ["SELECT name, phone FROM people WHERE name = 'Wren'"] * 2,  # no row, twice: the notes answer
                     ["The storage outage was led by Wren Ito.", "Wren Ito's phone number is +44 20 5550 0303."])
    with use_model(model.model):
        result = plan_and_run("What is the phone number of the person who led the storage outage?",
                              workspace=str(folder))
    assert "+44 20 5550 0303" in result.answer and result.route.startswith("chain")
    assert any("phone number of Wren Ito" in p for p in model.prompts), "the name found first was asked about"
    assert any(s.startswith("outage.md") for s in result.sources)
    assert any(s.startswith("people.csv") for s in result.sources)


@pytest.mark.usefixtures("prefect_server")
def test_a_question_that_does_not_split_takes_its_usual_route(folder: Path) -> None:
    from foreman.flows.planner import plan_and_run

    model = Scripted("NONE", [], ["Kai Berg's phone number is +44 20 5550 0202."])
    with use_model(model.model):
        result = plan_and_run("What is the phone number of the person whose name is Kai Berg?", workspace=str(folder))
    assert result.route.startswith("lookup") and "did not split" not in result.answer
    assert "+44 20 5550 0202" in result.answer and len(model.prompts) == 2


def test_the_value_handed_on_is_what_the_answer_adds_to_the_question() -> None:
    assert new_words("The api certificate expires on 2026-12-17.", "When does the api certificate expire?") == \
        "2026-12-17"
    assert new_words("Wren Ito led it.", "Who led the storage outage?") == "Wren Ito"
    assert new_words("It was on 3 March 2026.", "On which date was the flood?") == "3 March 2026"
    from foreman.engine.chain import iso_date

    assert iso_date("Saturday 21 November 2026") == "2026-11-21" and iso_date("Nov 3rd, 2026") == "2026-11-03"
    assert iso_date("21 November") is None and iso_date("3 March 2026 or 4 March 2026") is None
    # the question word says what kind of value is wanted: a name for "who", a date for "when"
    assert new_words("Maya led the response at 15:40.", "Who led the response to the outage?") == "Maya"
    assert new_words("It expires on 2026-12-17, as Ana said at 10:00.", "When does the VPN certificate expire?") == \
        "2026-12-17"
