"""A vision GGUF's projector on the embedded server: FOREMAN_LOCAL_MMPROJ_PATH reaches llama.cpp's
parameters, and the proxy passes image parts through to llama.cpp unchanged when a projector is
loaded, and refuses them with what to set when none is.

No vision GGUF + mmproj ships in any registry package, so llama.cpp never loads one here: the
parameters are checked on xllamacpp's own `CommonParams`, and the proxy is served for real
(uvicorn, HTTP) in front of a recording stand-in for llama.cpp's server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from foreman.cf_adapter.names import COMPLETION_PREFIX, FAILURE_SUFFIX, SUCCESS_SUFFIX
from foreman.errors import LocalModelError
from foreman.settings import Settings

IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
SUCCESS = {"type": "function", "function": {
    "name": f"{COMPLETION_PREFIX}ab12cd34{SUCCESS_SUFFIX}", "description": "Mark task ab12cd34 as successful.",
    "parameters": {"type": "object", "properties": {"result": {"type": "string"}}, "required": ["result"]}}}
FAILED = {"type": "function", "function": {
    "name": f"{COMPLETION_PREFIX}ab12cd34{FAILURE_SUFFIX}",
    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}}}
ASKED = {"messages": [
    {"role": "system", "content": "You are a helpful agent."},
    {"role": "user", "content": [{"type": "text", "text": "Attached files:\n\n[square.png: a 320x200 image]"},
                                 {"type": "image_url", "image_url": {"url": IMAGE}}]},
    {"role": "user", "content": "What colour is the square?"},
], "tools": [SUCCESS, FAILED]}


def test_the_projector_setting_reaches_llama_cpps_parameters(tmp_path: Path) -> None:
    from foreman.agents.local_config import bundled_model_path, config_for
    from foreman.agents.local_daemon import llama_params
    from foreman.agents.vision import vision_support

    mmproj = tmp_path / "mmproj-model-f16.gguf"
    mmproj.write_bytes(b"GGUF")
    model = bundled_model_path()
    text_only = config_for(Settings(local_model_path=model))
    with_eyes = config_for(Settings(local_model_path=model, local_mmproj_path=mmproj))
    assert text_only.mmproj_path is None and with_eyes.mmproj_path == mmproj.resolve()
    assert not with_eyes.same_model_as(text_only), "a running text-only server is restarted, not reused"
    assert llama_params(with_eyes).mmproj.path == str(mmproj.resolve())
    assert llama_params(with_eyes).model.path == str(with_eyes.model_path)
    assert llama_params(text_only).mmproj.path == ""
    assert vision_support(Settings(local_mmproj_path=mmproj)).vision
    assert not vision_support(Settings()).vision

    with pytest.raises(LocalModelError, match="FOREMAN_LOCAL_MMPROJ_PATH is .*not a file"):
        config_for(Settings(local_model_path=model, local_mmproj_path=tmp_path / "missing.gguf"))


class _Llama(BaseHTTPRequestHandler):
    """Stands in for llama.cpp's server: records each body, answers in words."""

    bodies: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._send({"status": "ok"})

    def do_POST(self) -> None:
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._send({"id": "c1", "created": 1, "model": "m", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Red."}}]})

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def proxy() -> Iterator[object]:
    """`serve(vision)`: the proxy on a real port in front of the recording llama; returns its URL."""
    import uvicorn

    from foreman.agents.local_proxy import create_app

    _Llama.bodies = []
    llama = ThreadingHTTPServer(("127.0.0.1", 0), _Llama)
    threading.Thread(target=llama.serve_forever, daemon=True).start()
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def serve(vision: bool) -> str:
        app = create_app(f"http://127.0.0.1:{llama.server_address[1]}", "vision-test", vision=vision)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    try:
        yield serve
    finally:
        for server, thread in running:
            server.should_exit = True
            thread.join(timeout=10)
        llama.shutdown()


def test_with_a_projector_the_proxy_passes_image_parts_to_llama_cpp_unchanged(proxy) -> None:
    url = proxy(True)
    reply = httpx.post(f"{url}/chat/completions", json=ASKED, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"].endswith(SUCCESS_SUFFIX)
    assert _Llama.bodies, "llama.cpp was asked"
    for body in _Llama.bodies:  # the words-first request and any forced one
        parts = [p for m in body["messages"] if isinstance(m.get("content"), list) for p in m["content"]]
        assert {"type": "image_url", "image_url": {"url": IMAGE}} in parts
        assert any("square.png" in p.get("text", "") for p in parts)
        assert "What colour is the square?" in json.dumps(body["messages"])


def test_without_a_projector_an_image_is_refused_with_what_to_set(proxy) -> None:
    url = proxy(False)
    reply = httpx.post(f"{url}/chat/completions", json=ASKED, timeout=60)
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert "carries an image" in message and "FOREMAN_LOCAL_MMPROJ_PATH" in message
    assert _Llama.bodies == [], "nothing went to llama.cpp"
    text = httpx.post(f"{url}/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "Hello"}]})
    assert text.status_code == 200 and len(_Llama.bodies) == 1  # text still works
