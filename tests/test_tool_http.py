"""fetch_url against a real local HTTP server: allowed hosts only, every redirect hop checked."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import httpx
import pydantic
import pytest

from foreman.errors import ToolRefused
from foreman.tools import http
from foreman.tools.http import FetchError, HttpPolicy, fetch_url, host_allowed


class Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []  # paths requested, shared with the tests

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(self.path)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/hello":
            self._send(200, "héllo wörld".encode())
        elif url.path == "/latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif url.path == "/html":
            self._send(200, b"<html><body><h1>Hi</h1></body></html>", "text/html")
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path.startswith("/chain/"):
            hops = int(url.path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", f"/chain/{hops - 1}" if hops > 0 else "/hello")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/big":
            self._send(200, b"a" * 50_000)
        elif url.path == "/slow":
            time.sleep(2)
            self._send(200, b"late")
        else:
            self._send(404, b"no such page")


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def base(server: int) -> str:
    Handler.seen.clear()
    return f"http://127.0.0.1:{server}"


def policy(**changes: object) -> HttpPolicy:
    values: dict[str, object] = {
        "allowed_hosts": ["127.0.0.1"],
        "timeout_s": 5.0,
        "max_bytes": 10_000,
        "max_redirects": 3,
    }
    values.update(changes)
    return HttpPolicy(**values)  # type: ignore[arg-type]


def test_from_settings() -> None:
    settings = SimpleNamespace(
        allowed_hosts=["a.org"], http_timeout_s=2.0, http_max_bytes=9, http_max_redirects=1
    )
    made = HttpPolicy.from_settings(settings)
    # own_ports: whatever Prefect API this process talks to (tests/test_hardening.py checks them)
    assert made.model_copy(update={"own_ports": []}) == HttpPolicy(
        allowed_hosts=["a.org"], timeout_s=2.0, max_bytes=9, max_redirects=1
    )


def test_allowed_host_returns_decoded_text(base: str) -> None:
    assert fetch_url(f"{base}/hello", policy()) == "héllo wörld"
    assert fetch_url(f"{base}/latin1", policy()) == "café"
    assert fetch_url(f"{base}/html", policy()).startswith("<html>")


def test_disallowed_host_is_refused_before_any_request(base: str, server: int) -> None:
    with pytest.raises(ToolRefused) as info:
        fetch_url(f"http://localhost:{server}/hello", policy())
    assert "'localhost' is not allowed" in str(info.value)
    assert "127.0.0.1" in str(info.value)  # says what is allowed
    assert Handler.seen == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1/hello", "not a url"]
)
def test_other_schemes_and_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ToolRefused, match="http"):
        fetch_url(url, policy())


def test_redirect_to_disallowed_host_is_refused(base: str, server: int) -> None:
    with pytest.raises(ToolRefused, match="redirect 1 to host 'localhost' is not allowed"):
        fetch_url(f"{base}/redirect?to=http://localhost:{server}/hello", policy())
    assert Handler.seen == [f"/redirect?to=http://localhost:{server}/hello"]


def test_redirects_within_allowed_hosts_are_followed_up_to_the_limit(base: str) -> None:
    # /chain/2 -> /chain/1 -> /chain/0 -> /hello: exactly three redirects.
    assert fetch_url(f"{base}/chain/2", policy(max_redirects=3)) == "héllo wörld"
    assert len(Handler.seen) == 4
    Handler.seen.clear()
    with pytest.raises(ToolRefused, match="more than 2 times"):
        fetch_url(f"{base}/chain/5", policy(max_redirects=2))
    assert Handler.seen == ["/chain/5", "/chain/4", "/chain/3"]  # the third hop is not taken


def test_no_redirects_allowed_refuses_the_first_one(base: str) -> None:
    with pytest.raises(ToolRefused, match="more than 0 times"):
        fetch_url(f"{base}/chain/0", policy(max_redirects=0))


def test_body_over_the_cap_is_truncated_with_a_marker(base: str) -> None:
    text = fetch_url(f"{base}/big", policy(max_bytes=1_000))
    body, marker = text.split("\n", 1)
    assert body == "a" * 1_000
    assert "truncated" in marker and "1000 bytes" in marker


def test_timeout_raises_fetch_error_quickly(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch_url(f"{base}/slow", policy(timeout_s=0.3))
    assert time.monotonic() - started < 1.5


def test_http_error_and_connection_failure_raise_fetch_error(base: str) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(f"{base}/missing", policy())
    with pytest.raises(FetchError, match="failed"):
        fetch_url("http://127.0.0.1:1/", policy())  # nothing listens on port 1


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.org", True),
        ("EXAMPLE.org.", True),
        ("docs.python.org", True),
        ("a.b.python.org", True),
        ("python.org", False),  # '*.python.org' is subdomains only
        ("evilpython.org", False),
        ("example.org.evil.com", False),
        ("", False),
    ],
)
def test_host_patterns(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["example.org", "*.python.org"]) is allowed


# --- one deadline for the whole fetch, against a server that trickles bytes ----------

TRICKLE_FOR_S = 5.0  # the trickle server gives up (and answers properly) after this long


@pytest.fixture(scope="module")
def trickler() -> Iterator[int]:
    """A raw-socket HTTP server that sends its answer a byte at a time.

    GET /headers: the status line, then one header byte every 0.25 s (headers never end
    within TRICKLE_FOR_S). GET /body: complete headers, then one body byte every 0.9 s;
    0.9 s is under the per-read timeout but over the deadline's slack, so only a real
    whole-fetch deadline stops it in time.
    """
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def trickle(conn: socket.socket, first: bytes, drip: bytes, every: float, last: bytes) -> None:
        conn.sendall(first)
        ends = time.monotonic() + TRICKLE_FOR_S
        while not stop.is_set() and time.monotonic() < ends:
            time.sleep(every)
            conn.sendall(drip)
        conn.sendall(last)

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536)
                if request.startswith(b"GET /headers"):
                    trickle(
                        conn,
                        b"HTTP/1.1 200 OK\r\nX-Slow: ",
                        b"a",
                        0.25,
                        b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                else:
                    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
                    trickle(conn, head, b"b", 0.9, b"")
            except OSError:  # the client gave up and closed the connection: expected
                pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize(("path", "phase"), [("/headers", "response headers"), ("/body", "body")])
def test_one_deadline_holds_while_the_server_trickles(trickler: int, path: str, phase: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_url(f"http://127.0.0.1:{trickler}{path}", policy(timeout_s=1.0))
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"the 1s deadline held for {elapsed:.2f}s"
    message = str(info.value)
    # The message states the real deadline and the real elapsed time, and where it stopped.
    assert "timed out" in message and "1s deadline" in message and phase in message
    stated = float(re.search(r"stopped after (\d+\.\d+)s", message).group(1))  # type: ignore[union-attr]
    assert 1.0 <= stated < 1.5


def test_fetch_works_when_called_from_inside_an_event_loop(base: str) -> None:
    # The fetch runs its own loop in a thread, so an async caller (a tool invoked from an
    # async flow) does not trip asyncio.run's "cannot be called from a running event loop".
    async def caller() -> str:
        return fetch_url(f"{base}/hello", policy())

    assert asyncio.run(caller()) == "héllo wörld"


# --- host:port entries ---------------------------------------------------------------


def test_a_host_port_entry_allows_that_port_only(base: str, server: int) -> None:
    assert (
        fetch_url(f"{base}/hello", policy(allowed_hosts=[f"127.0.0.1:{server}"])) == "héllo wörld"
    )
    with pytest.raises(ToolRefused, match=f"port {server} is not allowed \\(only port 1\\)"):
        fetch_url(f"{base}/hello", policy(allowed_hosts=["127.0.0.1:1"]))
    assert Handler.seen == ["/hello"]  # the refused call sent nothing


def test_a_redirect_to_another_port_of_an_allowed_host_is_refused(base: str, server: int) -> None:
    only_this_port = policy(allowed_hosts=[f"127.0.0.1:{server}"])
    with pytest.raises(ToolRefused, match="redirect 1 to host '127.0.0.1' on port 4200"):
        fetch_url(f"{base}/redirect?to=http://127.0.0.1:4200/api/health", only_this_port)


def test_a_url_without_a_port_uses_the_scheme_default() -> None:
    only_80 = policy(allowed_hosts=["127.0.0.1:80", "[::1]:443"])
    http._check(httpx.URL("http://127.0.0.1/x"), only_80, "the URL")
    http._check(httpx.URL("https://[::1]/x"), only_80, "the URL")
    with pytest.raises(ToolRefused, match="on port 443"):
        http._check(httpx.URL("https://127.0.0.1/x"), only_80, "the URL")


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("localhost", 8080, True),
        ("localhost", 4200, False),  # the entry names one port
        ("localhost", None, False),
        ("127.0.0.1", 4200, True),  # a bare host still means every port (as before)
        ("docs.python.org", 443, True),
        ("docs.python.org", 80, False),
        ("::1", 8080, True),
        ("::1", 8081, False),
        ("fe80::1", 9, True),  # a bare IPv6 address: any port
    ],
)
def test_host_port_patterns(host: str, port: int | None, allowed: bool) -> None:
    entries = ["localhost:8080", "127.0.0.1", "*.python.org:443", "[::1]:8080", "fe80::1"]
    assert host_allowed(host, entries, port) is allowed


@pytest.mark.parametrize("entry", ["localhost:http", "localhost:0", "localhost:70000", "[::1]x"])
def test_a_malformed_entry_is_a_setup_error(entry: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="allowed host"):
        policy(allowed_hosts=[entry])
