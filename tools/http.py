"""Fetch a web page, but only from hosts the user allowed.

The guard checks the scheme, host and port of the URL *and of every redirect hop*:
redirects are followed by hand, so an allowed host cannot bounce the fetch to a
disallowed one.

Allowed-host entries: 'example.org' (that host, any port), '*.example.org' (any
subdomain, any port), 'localhost:8080' or '[::1]:8080' (that port only). A bare host
means *every* port on that host, except Foreman's own services on loopback (the Prefect API,
the embedded model server), which only an entry naming their port ('127.0.0.1:4200') allows.
Write 'localhost:PORT' to allow one local service only.

One wall-clock deadline (`timeout_s`) covers the whole fetch: DNS, connect, sending,
response headers, every redirect hop and the body. httpx only has per-operation
timeouts, which a server defeats by trickling one byte at a time, so the request runs
on its own event loop under `asyncio.timeout`, which cancels it (closing the
connection) when the deadline passes.

Two kinds of failure, on purpose:
- `ToolRefused` when a guard says no (scheme, host, port, too many redirects). Nothing
  was sent to a disallowed host.
- `FetchError` when the network or the server failed (deadline, refused connection,
  HTTP 4xx/5xx). Trying again later may help; asking differently will not.

Bodies larger than `max_bytes` are *truncated*, not refused: the first `max_bytes`
bytes are returned followed by an explicit "[... truncated ...]" marker line, because
the start of a long page is usually what an agent needs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field, field_validator

from foreman.errors import (
    FetchError,
    ToolRefused,
)

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
USER_AGENT = "Foreman/0.1 (fetch_url tool)"
# Extra wait for the worker thread after the deadline. Cancellation normally ends it at
# once; this only matters if something uncancellable (a hung DNS lookup) holds the loop.
DEADLINE_GRACE_S = 0.5

T = TypeVar("T")


class HttpPolicy(BaseModel):
    """Where `fetch_url` may go and how much it may take."""

    allowed_hosts: list[str] = Field(
        description=(
            "Exact host names, '*.example.org' for any subdomain of example.org, "
            "'host:port' for one port only (a bare host allows every port)."
        )
    )
    timeout_s: float = Field(gt=0, description="Whole-fetch deadline, redirects included.")
    max_bytes: int = Field(gt=0)
    max_redirects: int = Field(ge=0)
    own_ports: list[int] = Field(
        default_factory=list, description="Loopback ports of Foreman's own services (the Prefect API, the model "
        "server): refused unless an entry names that port ('127.0.0.1:4200'), whatever a bare host allows.")

    @field_validator("allowed_hosts")
    @classmethod
    def _entries_parse(cls, entries: list[str]) -> list[str]:
        """Fail at setup on 'host:http' or 'host:99999', not silently at fetch time."""
        for entry in entries:
            split_entry(entry)
        return entries

    @classmethod
    def from_settings(cls, settings: Any) -> HttpPolicy:
        return cls(
            allowed_hosts=list(settings.allowed_hosts),
            timeout_s=settings.http_timeout_s,
            max_bytes=settings.http_max_bytes,
            max_redirects=settings.http_max_redirects,
            own_ports=own_ports(settings),
        )


_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def own_ports(settings: Any) -> list[int]:
    """The loopback ports Foreman's own services listen on now: the Prefect API this process
    talks to, and the embedded model server. A run's answers and decisions are there."""
    ports: list[int] = []
    try:
        from prefect.settings import PREFECT_API_URL

        api = httpx.URL(PREFECT_API_URL.value() or "")
        if _normal(api.host) in _LOOPBACK:
            ports.append(api.port or DEFAULT_PORTS.get(api.scheme, 80))
    except (ImportError, httpx.InvalidURL, ValueError):
        pass
    try:
        from foreman.agents.local_state import read_state, state_paths

        state = read_state(state_paths(settings)[0])
        if state is not None:
            ports += [state.proxy_port, state.llama_port]
    except (ImportError, OSError, ValueError, AttributeError):
        pass
    return sorted(set(ports))


# --- the host guard ------------------------------------------------------------------


def _normal(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def split_entry(entry: str) -> tuple[str, int | None]:
    """An allowed-hosts entry as (normalised host pattern, port or None for any port).

    'h', 'h:8080', '*.h:443', '[::1]', '[::1]:8080'; a bare IPv6 address ('::1', more
    than one colon, no brackets) means that address on any port.
    """
    text = entry.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"allowed host {entry!r}: write '[address]:port'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    if port_text is None:
        return _normal(host), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"allowed host {entry!r}: the port must be a number from 1 to 65535")
    return _normal(host), int(port_text)


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _entries(allowed_hosts: list[str]) -> list[tuple[str, int | None]]:
    """Parsed entries; an unparsable one matches nothing (the policy validator reports it)."""
    parsed = []
    for entry in allowed_hosts:
        try:
            parsed.append(split_entry(entry))
        except ValueError:
            continue
    return parsed


def host_allowed(host: str, allowed_hosts: list[str], port: int | None = None) -> bool:
    """True if `host` (on `port`) is listed exactly, or is a subdomain of a '*.domain' entry.

    '*.example.org' matches 'a.example.org' and 'a.b.example.org' but not 'example.org'
    itself; list that separately if you want it. An entry with a port ('localhost:8080')
    matches only that port, so it never matches when `port` is None.
    """
    host = _normal(host)
    if not host:
        return False
    return any(
        _host_matches(host, pattern) and (entry_port is None or entry_port == port)
        for pattern, entry_port in _entries(allowed_hosts)
    )


def _check(url: httpx.URL, policy: HttpPolicy, hop: str) -> None:
    if url.scheme not in ALLOWED_SCHEMES:
        raise ToolRefused(
            "fetch_url",
            f"{hop} {url} uses the scheme {url.scheme!r}; only http:// and https:// URLs "
            "may be fetched",
        )
    port = url.port or DEFAULT_PORTS[url.scheme]
    if _normal(url.host) in _LOOPBACK and port in policy.own_ports and not any(
            p == port and _host_matches(_normal(url.host), pattern) for pattern, p in _entries(policy.allowed_hosts)):
        raise ToolRefused("fetch_url", f"{hop} {url.host}:{port} is Foreman's own service (the Prefect API or the "
                                       f"model server), which holds every run's answers; allow it only by naming "
                                       f"that port in FOREMAN_ALLOWED_HOSTS ('{url.host}:{port}')")
    if host_allowed(url.host, policy.allowed_hosts, port):
        return
    allowed = ", ".join(policy.allowed_hosts) or "(none)"
    host = _normal(url.host)
    ports = sorted(
        str(p)
        for pattern, p in _entries(policy.allowed_hosts)
        if p and _host_matches(host, pattern)
    )
    if ports:
        reason = (
            f"{hop} host {url.host!r} on port {port} is not allowed (only port {', '.join(ports)})"
        )
    else:
        reason = f"{hop} host {url.host!r} is not allowed"
    raise ToolRefused(
        "fetch_url",
        f"{reason}; allowed hosts are: {allowed} "
        "(the user can add hosts with FOREMAN_ALLOWED_HOSTS)",
    )


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise ToolRefused(
            "fetch_url",
            f"{url!r} is not a valid URL ({exc}); give a full URL like https://host/path",
        ) from None
    if not parsed.scheme or not parsed.host:
        raise ToolRefused(
            "fetch_url", f"{url!r} is not a full URL; give one like https://host/path"
        )
    return parsed


def _charset(response: httpx.Response) -> str:
    name = response.charset_encoding or "utf-8"
    try:
        "".encode(name)
    except LookupError:
        return "utf-8"
    return name


# --- fetching under one deadline -----------------------------------------------------


@dataclass
class _Progress:
    """Where the fetch is, so a deadline error can say which hop and phase it stopped in."""

    url: httpx.URL
    phase: str = "connecting"


def fetch_url(url: str, policy: HttpPolicy) -> str:
    """GET `url` and return its body as text (HTML is returned as-is).

    Follows at most `policy.max_redirects` redirects, checking each hop's host and port.
    Decodes by the response's charset (UTF-8 when none is given). Raises ToolRefused for
    guard refusals and FetchError for network or HTTP errors, or when the whole fetch
    takes longer than `policy.timeout_s`.
    """
    progress = _Progress(_parse(url))
    _check(progress.url, policy, "the URL")
    started = time.monotonic()
    try:
        return _run_on_own_loop(
            lambda: _fetch(url, progress, policy, started + policy.timeout_s),
            wait_s=policy.timeout_s + DEADLINE_GRACE_S,
        )
    except (TimeoutError, httpx.TimeoutException):
        raise _deadline_error(progress, policy, time.monotonic() - started) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise FetchError(
            f"Fetching {progress.url} failed: {type(exc).__name__}: {exc}. "
            "Check that the server is up and the URL is right."
        ) from None


def _deadline_error(progress: _Progress, policy: HttpPolicy, elapsed: float) -> FetchError:
    return FetchError(
        f"Fetching {progress.url} timed out: the whole fetch has a {policy.timeout_s:g}s "
        f"deadline and was stopped after {elapsed:.2f}s while {progress.phase}. The server "
        "may be slow or down; try again later (the limit is FOREMAN_HTTP_TIMEOUT_S)."
    )


def _run_on_own_loop(main: Callable[[], Coroutine[Any, Any, T]], wait_s: float) -> T:
    """Run `main()` on a fresh event loop in a daemon thread; wait at most `wait_s`.

    A thread because the caller may itself be inside an event loop (where asyncio.run
    refuses), and so that the caller gets control back even if the loop cannot stop
    (raises TimeoutError then; the abandoned thread ends when its blocking call does).
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="fetch_url", daemon=True)
    thread.start()
    thread.join(wait_s)
    if thread.is_alive():
        raise TimeoutError("the fetch did not stop at its deadline")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def _fetch(url: str, progress: _Progress, policy: HttpPolicy, deadline: float) -> str:
    """The fetch itself; `asyncio.timeout` cancels it wherever it is at `deadline`."""
    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
        # trust_env=False: no proxy or netrc from the environment may reroute the request.
        async with httpx.AsyncClient(
            follow_redirects=False,
            timeout=policy.timeout_s,
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        ) as client:
            redirects = 0
            while True:
                progress.phase = "connecting and waiting for the response headers"
                async with client.stream("GET", progress.url) as response:
                    if response.is_redirect:
                        target = progress.url.join(response.headers["location"])
                        redirects += 1
                        if redirects > policy.max_redirects:
                            raise ToolRefused(
                                "fetch_url",
                                f"{url} redirected more than {policy.max_redirects} times "
                                f"(next hop: {target}); fetch the final URL directly",
                            )
                        _check(target, policy, f"redirect {redirects} to")
                        progress.url = target
                        continue
                    if response.status_code >= 400:
                        raise FetchError(
                            f"{progress.url} answered HTTP {response.status_code} "
                            f"{response.reason_phrase}; check the URL or try again later."
                        )
                    progress.phase = "reading the body"
                    body, truncated = await _read_capped(response, policy.max_bytes)
                    text = body.decode(_charset(response), errors="replace")
                    break
    if truncated:
        text += (
            f"\n[... truncated: the response was longer than {policy.max_bytes} bytes; "
            "only the beginning is shown ...]"
        )
    return text


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of the body, and whether more was left unread."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    return bytes(body), False
