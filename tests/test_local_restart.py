"""The embedded model server dies mid-call: the call is sent again to the restarted server
(`agents/local_transport.py`), over real sockets; and with the real tiny model, kill -9."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from foreman.agents.local_transport import RestartingTransport


class Answering(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.bodies.append(body)  # type: ignore[attr-defined]
        reply = b'{"answer": "pong"}'
        self.send_response(200)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


class Dying(Answering):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        self.server.bodies.append(b"died")  # type: ignore[attr-defined]
        self.connection.shutdown(socket.SHUT_RDWR)  # dies while generating: no byte of an answer


@pytest.fixture
def servers() -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    made = []
    for handler in (Dying, Answering):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.bodies = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        made.append(server)
    yield made[0], made[1]
    for server in made:
        server.shutdown()
        server.server_close()


def test_a_call_dropped_by_a_dying_server_is_sent_again_to_the_restarted_one(servers) -> None:
    dying, restarted = servers
    restarts: list[str] = []

    def restart() -> str:
        restarts.append("started")
        return f"http://127.0.0.1:{restarted.server_address[1]}/v1"

    client = httpx.Client(transport=RestartingTransport(restart))
    first = client.post(f"http://127.0.0.1:{dying.server_address[1]}/v1/chat/completions", json={"q": 1})
    assert first.json() == {"answer": "pong"} and restarts == ["started"]
    assert dying.bodies == [b"died"] and restarted.bodies == [b'{"q":1}']  # the same request, once more
    # later calls go straight to the new server: no second restart, nothing sent to the dead one
    client.post(f"http://127.0.0.1:{dying.server_address[1]}/v1/chat/completions", json={"q": 2})
    assert restarts == ["started"] and dying.bodies == [b"died"] and len(restarted.bodies) == 2


def test_a_server_that_stays_dead_ends_in_the_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # a port nobody listens on once this closes
    client = httpx.Client(transport=RestartingTransport(lambda: f"http://127.0.0.1:{dead}/v1"))
    with pytest.raises(httpx.ConnectError):
        client.post(f"http://127.0.0.1:{dead}/v1/chat/completions", json={})


@pytest.mark.slow
def test_the_tiny_model_killed_mid_call_is_restarted_and_the_call_answered(tmp_path: Path) -> None:
    from foreman.agents.local import local_chat_model
    from foreman.agents.local_server import status, stop
    from foreman.agents.model_catalog import TINY_MODEL
    from foreman.settings import Settings

    settings = Settings(home=tmp_path / "home", local_ctx=2048, local_model=TINY_MODEL, max_tokens=400)
    model = local_chat_model(settings)
    try:
        first_pid = status(settings).info.pid
        answers: list[str] = []

        def ask() -> None:
            answers.append(str(model.invoke("Count from one to five hundred in words.").content))

        worker = threading.Thread(target=ask)
        worker.start()
        time.sleep(1.0)  # generating (on an idle machine the tiny model may already be done: then the next call)
        os.kill(first_pid, signal.SIGKILL)
        worker.join(timeout=300)
        ask()  # the server is dead now, whenever it died: this call starts it again too
        assert len(answers) == 2 and all(a.strip() for a in answers), "both calls answered"
        now = status(settings)
        assert now.running and now.info is not None and now.info.pid != first_pid  # a new server answered
    finally:
        stop(settings)
