"""A model call that outlives the embedded server: restart it and ask again.

The shared llama.cpp server is a process of its own; it can die mid-call (killed, out of
memory, a crash in the model). The OpenAI client's own retry would knock on the dead port,
so the local chat model's HTTP transport catches the failures that mean "nobody is there
any more" (refused, or dropped before the answer's first byte), starts the server again
with `ensure_running` (which also replaces a server that stopped answering), and sends the
same request to wherever the new server listens.

Safe to repeat: the proxy answers only when the model has finished (`agents/local_proxy.py`
replays a forced call as a stream once it is whole), so a dropped call has given the client
nothing, and no tool has run on its answer. Only the model call is repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

log = logging.getLogger("foreman.local")

RESTARTS_PER_CALL = 2
# "Nobody there": refused, or the connection dropped before any of the answer was read.
_GONE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


class RestartingTransport(httpx.BaseTransport):
    """Send; when the server is gone, `restart()` it (returning its new base URL) and send again."""

    def __init__(self, restart: Callable[[], str], inner: httpx.BaseTransport | None = None) -> None:
        self._restart = restart
        self._inner = inner or httpx.HTTPTransport()
        self._moved_to: str | None = None  # the restarted server's base URL, for every later call

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        for attempt in range(RESTARTS_PER_CALL + 1):
            if self._moved_to:
                request = _to(request, self._moved_to)
            try:
                response = self._inner.handle_request(request)
                response.read()  # the whole answer, so a drop half-way is caught here, not by the caller
                return response
            except _GONE as exc:
                if attempt == RESTARTS_PER_CALL:
                    raise
                log.warning("the local model server is gone (%s): starting it again", type(exc).__name__)
                self._moved_to = self._restart()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._inner.close()


class AsyncRestartingTransport(httpx.AsyncBaseTransport):
    """The same for async clients (`ainvoke`, `astream`)."""

    def __init__(self, restart: Callable[[], str], inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._restart = restart
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._moved_to: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import anyio.to_thread

        await request.aread()
        for attempt in range(RESTARTS_PER_CALL + 1):
            if self._moved_to:
                request = _to(request, self._moved_to)
            try:
                response = await self._inner.handle_async_request(request)
                await response.aread()
                return response
            except _GONE as exc:
                if attempt == RESTARTS_PER_CALL:
                    raise
                log.warning("the local model server is gone (%s): starting it again", type(exc).__name__)
                self._moved_to = await anyio.to_thread.run_sync(self._restart)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._inner.aclose()


def _to(request: httpx.Request, base_url: str) -> httpx.Request:
    """`request` re-addressed to the restarted server (same path, body and headers)."""
    base = httpx.URL(base_url)
    url = request.url.copy_with(scheme=base.scheme, host=base.host, port=base.port)
    return httpx.Request(request.method, url, headers=request.headers, content=request.content,
                         extensions=request.extensions)
