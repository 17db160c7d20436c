"""fetch_url against a real local HTTP server: allowed hosts only, every redirect hop checked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from foreman.errors import ToolRefused
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
    assert HttpPolicy.from_settings(settings) == HttpPolicy(
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
