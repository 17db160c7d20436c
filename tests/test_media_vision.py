"""An image attached to a task reaches a vision model as image content; a text-only model
without readable text in the image is refused at planning time.

The vision model is a real HTTP server on loopback speaking the OpenAI chat protocol
(whole or streamed): it records every request body and completes the
task by calling ControlFlow's own success tool, so the whole path runs: attachments ->
ControlFlow flow history -> langchain's ChatOpenAI -> HTTP.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image, ImageDraw

from foreman.errors import VisionRequired


class _Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        tools = [t["function"] for t in body.get("tools", [])]
        done = next(t for t in tools if t["name"].endswith("_successful"))
        args = {name: "a red square" for name in done["parameters"].get("properties", {})}
        call = {"index": 0, "id": "call_1", "type": "function",
                "function": {"name": done["name"], "arguments": json.dumps(args)}}
        if not body.get("stream"):
            reply = {"id": "r1", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "tool_calls",
                                  "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        chunks = [{"role": "assistant", "content": None, "tool_calls": [call]}, {}]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, delta in enumerate(chunks):
            event = {"id": "r1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "delta": delta, "finish_reason": "tool_calls" if i else None}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture()
def vision_server() -> Iterator[str]:
    _Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def _square(path: Path, *, screenshot: bool = False) -> None:
    """A red square on white; as a `screenshot`, 1600x1000 with 40 lines of log text around it
    (a data URL of about 145 kB, which ControlFlow's own count would take for 100k tokens)."""
    size = (1600, 1000) if screenshot else (320, 200)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    if screenshot:
        for i in range(40):
            draw.text((20, 20 + 24 * i), f"log line {i}: backup job finished with status OK at 02:{i:02d}",
                      fill="black", font_size=18)
    cx, cy = size[0] // 2, size[1] // 2
    draw.rectangle((cx - 60, cy - 50, cx + 60, cy + 50), fill=(220, 0, 0))
    img.save(path)


def test_an_attached_image_reaches_a_vision_model_as_image_content(
        workspace: Path, foreman_home: Path, vision_server: str, monkeypatch: pytest.MonkeyPatch,
        prefect_server: None) -> None:
    import controlflow as cf

    from foreman.agents.models import build_chat_model
    from foreman.cf_adapter.taskrun import run_task
    from foreman.engine.attachments import prepare_attachments
    from foreman.settings import get_settings, reset_settings
    from foreman.tools.audit import audit_log

    monkeypatch.setenv("FOREMAN_MODEL", "openai-compatible/vision-test")
    monkeypatch.setenv("FOREMAN_BASE_URL", vision_server)
    monkeypatch.setenv("FOREMAN_MODEL_VISION", "true")
    reset_settings()
    settings = get_settings()
    _square(workspace / "square.png", screenshot=True)
    (workspace / "note.txt").write_text("The square is the logo of the backup service.\n")

    attached = prepare_attachments(["square.png", "note.txt"], settings=settings, workspace=workspace)
    assert attached.vision.vision and attached.files[0].methods == ["vision"]

    agent = cf.Agent(name="Looker", model=build_chat_model(settings))
    flow = cf.Flow(name="vision-test")
    flow.add_events([attached.user_message()])
    task = cf.Task("What shape and colour is in the attached image?", agents=[agent], result_type=str)
    with flow:
        result = run_task(task, audit=audit_log(settings.audit_db), flow=flow)
    assert result == "a red square"

    sent = _Recorder.bodies[0]
    parts = [p for m in sent["messages"] if isinstance(m.get("content"), list) for p in m["content"]]
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    assert len(urls) == 1 and urls[0].startswith("data:image/")
    header, payload = urls[0].split(",", 1)
    assert header.endswith(";base64")
    with Image.open(io.BytesIO(base64.b64decode(payload))) as img:  # the very picture, decodable
        assert img.size == (1024, 640)  # shrunk to the vision limit, not cut
        assert img.convert("RGB").getpixel((512, 320))[0] > 200  # red in the middle
    texts = " ".join(p.get("text", "") for p in parts)
    assert "backup service" in texts  # the text file rode along with the image (cross-modal)


def test_a_run_with_an_attached_image_sends_it_to_the_vision_model_in_the_step_request(
        workspace: Path, foreman_home: Path, vision_server: str, monkeypatch: pytest.MonkeyPatch,
        prefect_server: None) -> None:
    """`plan_and_run(files=...)`: the step's flow history carries the image, so the request body does."""
    from foreman.engine.plan import Plan, SubTask
    from foreman.flows.planner import plan_and_run
    from foreman.settings import reset_settings

    monkeypatch.setenv("FOREMAN_MODEL", "openai-compatible/vision-test")
    monkeypatch.setenv("FOREMAN_BASE_URL", vision_server)
    monkeypatch.setenv("FOREMAN_MODEL_VISION", "true")
    reset_settings()
    _square(workspace / "square.png")
    (workspace / "note.txt").write_text("The square is the logo of the backup service.\n")
    step = SubTask(id="look", title="Look", instructions="Say what shape and colour the attached image shows.",
                   agent="generalist")
    result = plan_and_run("What is in the image?", workspace=str(workspace), ground=False,
                          files=["square.png", "note.txt"], plan=Plan(tasks=[step]))

    assert result.statuses == {"look": "COMPLETED"}
    looked = [b for b in _Recorder.bodies if "Say what shape and colour" in json.dumps(b["messages"])]
    assert looked, "the step's request reached the server"
    parts = [p for m in looked[0]["messages"] if isinstance(m.get("content"), list) for p in m["content"]]
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    assert len(urls) == 1 and urls[0].startswith("data:image/")
    with Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1]))) as img:
        assert img.convert("RGB").getpixel((img.width // 2, img.height // 2))[0] > 200  # the red square
    assert "backup service" in " ".join(p.get("text", "") for p in parts)  # the text file rode along


def test_an_image_without_text_on_a_text_only_model_is_refused_at_planning(
        workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    _square(workspace / "square.png")
    with pytest.raises(VisionRequired) as caught:
        prepare_attachments(["square.png"], workspace=workspace)  # FOREMAN_MODEL=local: text-only
    message = str(caught.value)
    assert message.startswith("this objective needs a vision model")
    assert "FOREMAN_MODEL=" in message and "FOREMAN_LOCAL_MMPROJ_PATH=" in message


def test_an_objective_about_what_an_image_looks_like_needs_vision_even_with_text(
        workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    img = Image.new("RGB", (600, 120), "white")
    ImageDraw.Draw(img).text((20, 30), "DISK FULL", fill="black", font_size=48)
    img.save(workspace / "alert.png")
    with pytest.raises(VisionRequired, match="asks to look at"):
        prepare_attachments(["alert.png"], workspace=workspace, needs_vision=True)


def test_canary_controlflow_counts_an_image_as_its_base64_text() -> None:
    """Unpatched, ControlFlow would trim a screenshot's message (and all before it) away."""
    from controlflow.events import message_compiler
    from controlflow.llm.messages import HumanMessage

    from foreman import cf_adapter
    from foreman.cf_adapter.images import IMAGE_TOKENS, original_count_tokens
    from foreman.tools.media.images import vision_data_url

    cf_adapter.apply()
    buf = io.BytesIO()
    path = Path(__file__).parent / ".." / "demo" / "workspace" / "docs" / "warranty-summary.pdf"
    from foreman.tools.media.pdf import page_images

    buf.write(page_images(path.resolve(), [1], dpi=150)[0])
    message = HumanMessage(content=[{"type": "text", "text": "look"},
                                    {"type": "image_url", "image_url": {"url": vision_data_url(buf.getvalue())}}])
    assert original_count_tokens()(message) > 20_000  # the bug: base64 counted as text
    assert message_compiler.count_tokens(message) < IMAGE_TOKENS + 100
    assert message_compiler.trim_messages([message] * 5, 100_000) == [message] * 5
