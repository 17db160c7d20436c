"""Files attached to a run reach everything that works on it: the planner (told which files and
what they hold), every agent step (as a user message in its flow), the fast path's one call (cited
by file name), and the answer (with the note that OCR was used); a bad file stops the run before
any model call. (A vision model's run, image and all: `test_media_vision.py`.)

The model is scripted and keeps every prompt it was shown, so each test checks what reached it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from prefect.settings import PREFECT_API_URL

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn, succeed, succeed_model
from foreman.flows.planner import plan_and_run

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")

PDF = "docs/warranty-summary.pdf"  # in the demo workspace: the UPS warranty ends 2026-04-02 (page 2)
NOTE = "The spare UPS battery cartridge is on shelf B3 in the basement."
LABEL = ["SPARE BATTERY APCRBC124", "SHELF B3"]


class Recorder:
    """A scripted model that keeps every prompt and answers by what the prompt asks for."""

    def __init__(self, step: dict | None = None) -> None:
        self.prompts: list[str] = []
        self.step = step
        self.lock = threading.Lock()
        self.model = ScriptedChatModel(responder=self.respond)

    def respond(self, turn: Turn) -> ScriptedReply:
        text = "\n".join(str(m.content) for m in turn.messages)
        with self.lock:
            self.prompts.append(text)
        if "a plan for this objective" in text:
            return succeed_model(rationale="one look at the files", tasks=[self.step])
        if "Answer the objective" in text:
            return succeed("The UPS warranty ends on 2026-04-02; its spare battery is on shelf B3.")
        if "Question:" in text:  # the fast path's one call
            return ScriptedReply(content="The UPS warranty ends on 2026-04-02 (warranty-summary.pdf).")
        return succeed("warranty until 2026-04-02, spare battery on shelf B3")

    def containing(self, phrase: str) -> list[str]:
        return [p for p in self.prompts if phrase in p]


def label_image(path: Path) -> None:
    img = Image.new("RGB", (900, 90 * len(LABEL) + 40), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(LABEL):
        draw.text((30, 30 + 90 * i), line, fill="black", font_size=44)  # Pillow's own font
    img.save(path)


def artifacts(run_id: str) -> dict[str, str]:
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 50, "offset": 0}
    rows = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30).json()
    return {r["key"]: r["data"] for r in rows if r.get("key")}


def test_attached_pdf_text_and_ocr_image_reach_the_planner_the_step_and_the_answer(workspace: Path) -> None:
    (workspace / "note.txt").write_text(NOTE + "\n")
    label_image(workspace / "label.png")
    step = {"id": "check", "title": "Check the UPS", "instructions": "Compare the warranty with the label.",
            "agent": "generalist"}
    model = Recorder(step)
    files = [PDF, "note.txt", "label.png"]
    with use_model(model.model):
        state = plan_and_run("Compare the UPS warranty with the spare battery label", workspace=str(workspace),
                             ground=False, files=files, return_state=True)
    result = state.result()

    [planner] = model.containing("a plan for this objective")
    assert "warranty-summary.pdf (pdf; read as PDF text with page numbers)" in planner
    assert "label.png (image; read as OCR text)" in planner
    assert "2026-04-02" in planner and "shelf B3" in planner, "the planner saw what the files hold"
    [sub_task] = model.containing("Compare the warranty with the label.")
    assert "[warranty-summary.pdf, page 2]" in sub_task and "until 2026-04-02" in sub_task
    assert NOTE in sub_task
    assert "SHELF B3" in sub_task.upper() and "read from the image by OCR" in sub_task
    assert result.plan.task("check").files == files  # the plan says which files the step got
    assert result.answer.startswith("The UPS warranty ends on 2026-04-02")
    assert "Note: Text of label.png was read by OCR" in result.answer

    shown = artifacts(str(state.state_details.flow_run_id))
    for name in ("warranty-summary.pdf", "note.txt", "label.png"):
        assert name in shown["attachments"]
    assert "OCR text" in shown["attachments"] and "read by OCR" in shown["answer"]


def test_a_question_about_an_attached_file_is_answered_from_it_in_one_call(workspace: Path) -> None:
    model = Recorder()
    with use_model(model.model):
        result = plan_and_run("When does the UPS warranty end?", workspace=str(workspace), ground=False,
                              files=[PDF])

    assert len(model.prompts) == 1, "the fast path: no planner, no step"
    assert "until 2026-04-02" in model.prompts[0], "the page that answers it reached the model"
    assert result.answer.startswith("The UPS warranty ends on 2026-04-02")
    assert any(s.startswith("warranty-summary.pdf:p2:") for s in result.sources), result.sources
    assert [t.id for t in result.plan.tasks] == ["answer"]


def test_a_missing_or_unreadable_file_fails_the_run_before_any_model_call(workspace: Path) -> None:
    from foreman.errors import ForemanError

    model = Recorder()
    (workspace / "minutes.docx").write_bytes(b"PK\x03\x04")
    for file, says in (("no-such.pdf", "no-such.pdf"), ("minutes.docx", "Foreman cannot read"),
                       ("../outside.txt", "outside the workspace")):
        with use_model(model.model):
            state = plan_and_run("Summarise it", workspace=str(workspace), ground=False, files=[file],
                                 return_state=True)
        assert state.is_failed()
        with pytest.raises(ForemanError, match=says):
            state.result()
    assert model.prompts == [], "nothing was planned or asked"


def test_an_image_without_text_on_a_text_only_model_stops_the_run_at_planning(workspace: Path) -> None:
    from foreman.errors import VisionRequired

    img = Image.new("RGB", (320, 200), "white")
    ImageDraw.Draw(img).rectangle((100, 50, 220, 150), fill=(220, 0, 0))
    img.save(workspace / "square.png")
    model = Recorder()
    with use_model(model.model):
        state = plan_and_run("What colour is the square?", workspace=str(workspace), ground=False,
                             files=["square.png"], return_state=True)
    with pytest.raises(VisionRequired, match="this objective needs a vision model.*FOREMAN_LOCAL_MMPROJ_PATH"):
        state.result()
    assert model.prompts == []



def test_foreman_plan_with_a_file_shows_the_planner_the_file_and_lists_it_on_each_step(workspace: Path) -> None:
    from foreman.flows.planner import plan_objective

    (workspace / "note.txt").write_text(NOTE + "\n")
    step = {"id": "find", "title": "Find the spare", "instructions": "Say where the spare battery is.",
            "agent": "generalist"}
    model = Recorder(step)
    with use_model(model.model):
        outcome = plan_objective("Where is the spare UPS battery kept?", workspace=str(workspace), grounded=False,
                                 files=["note.txt"])
    [planner] = model.prompts
    assert "note.txt (text; read as plain text)" in planner and "shelf B3" in planner
    assert outcome.valid.plan.task("find").files == ["note.txt"]
