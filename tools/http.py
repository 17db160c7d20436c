"""Fetch a web page, but only from hosts the user allowed.

The guard checks the scheme and host of the URL *and of every redirect hop*: redirects
are followed by hand, so an allowed host cannot bounce the fetch to a disallowed one.

Two kinds of failure, on purpose:
- `ToolRefused` when a guard says no (scheme, host, too many redirects). Nothing was
  sent to a disallowed host.
- `FetchError` when the network or the server failed (timeout, refused connection,
  HTTP 4xx/5xx). Trying again later may help; asking differently will not.

Bodies larger than `max_bytes` are *truncated*, not refused: the first `max_bytes`
bytes are returned followed by an explicit "[... truncated ...]" marker line, because
the start of a long page is usually what an agent needs.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, Field

from foreman.errors import (
    FetchError,
    ToolRefused,
)

ALLOWED_SCHEMES = ("http", "https")
USER_AGENT = "Foreman/0.1 (fetch_url tool)"




class HttpPolicy(BaseModel):
    """Where `fetch_url` may go and how much it may take."""

    allowed_hosts: list[str] = Field(
        description="Exact host names, or '*.example.org' for any subdomain of example.org."
    )
    timeout_s: float = Field(gt=0, description="Whole-fetch deadline, redirects included.")
    max_bytes: int = Field(gt=0)
    max_redirects: int = Field(ge=0)

    @classmethod
    def from_settings(cls, settings: Any) -> HttpPolicy:
        return cls(
            allowed_hosts=list(settings.allowed_hosts),
            timeout_s=settings.http_timeout_s,
            max_bytes=settings.http_max_bytes,
            max_redirects=settings.http_max_redirects,
        )


def _normal(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """True if `host` is listed exactly, or is a subdomain of a '*.domain' entry.

    '*.example.org' matches 'a.example.org' and 'a.b.example.org' but not 'example.org'
    itself; list that separately if you want it.
    """
    host = _normal(host)
    if not host:
        return False
    for entry in allowed_hosts:
        pattern = _normal(entry)
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _check(url: httpx.URL, policy: HttpPolicy, hop: str) -> None:
    if url.scheme not in ALLOWED_SCHEMES:
        raise ToolRefused(
            "fetch_url",
            f"{hop} {url} uses the scheme {url.scheme!r}; only http:// and https:// URLs "
            "may be fetched",
        )
    if not host_allowed(url.host, policy.allowed_hosts):
        allowed = ", ".join(policy.allowed_hosts) or "(none)"
        raise ToolRefused(
            "fetch_url",
            f"{hop} host {url.host!r} is not allowed; allowed hosts are: {allowed} "
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


def fetch_url(url: str, policy: HttpPolicy) -> str:
    """GET `url` and return its body as text (HTML is returned as-is).

    Follows at most `policy.max_redirects` redirects, checking each hop's host. Decodes
    by the response's charset (UTF-8 when none is given). Raises ToolRefused for guard
    refusals and FetchError for network or HTTP errors.
    """
    current = _parse(url)
    _check(current, policy, "the URL")
    deadline = time.monotonic() + policy.timeout_s
    redirects = 0
    # trust_env=False: no proxy or netrc from the environment may reroute the request.
    with httpx.Client(
        follow_redirects=False,
        timeout=policy.timeout_s,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    ) as client:
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise httpx.ConnectTimeout("no time left for the next redirect hop")
                with client.stream("GET", current, timeout=remaining) as response:
                    if response.is_redirect:
                        target = current.join(response.headers["location"])
                        redirects += 1
                        if redirects > policy.max_redirects:
                            raise ToolRefused(
                                "fetch_url",
                                f"{url} redirected more than {policy.max_redirects} times "
                                f"(next hop: {target}); fetch the final URL directly",
                            )
                        _check(target, policy, f"redirect {redirects} to")
                        current = target
                        continue
                    if response.status_code >= 400:
                        raise FetchError(
                            f"{current} answered HTTP {response.status_code} "
                            f"{response.reason_phrase}; check the URL or try again later."
                        )
                    body, truncated = _read_capped(response, policy.max_bytes, deadline, current)
                    text = body.decode(_charset(response), errors="replace")
            except httpx.TimeoutException:
                raise FetchError(
                    f"Fetching {current} timed out after {policy.timeout_s:g}s; the server may be "
                    "slow or down. Try again later (the limit is FOREMAN_HTTP_TIMEOUT_S)."
                ) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise FetchError(
                    f"Fetching {current} failed: {type(exc).__name__}: {exc}. "
                    "Check that the server is up and the URL is right."
                ) from None
            if truncated:
                text += (
                    f"\n[... truncated: the response was longer than {policy.max_bytes} bytes; "
                    "only the beginning is shown ...]"
                )
            return text


def _read_capped(
    response: httpx.Response, max_bytes: int, deadline: float, url: httpx.URL
) -> tuple[bytes, bool]:
    """At most `max_bytes` of the body, and whether more was left unread."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
        # httpx's timeout is per read; a server trickling bytes needs a total deadline.
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout(f"total deadline passed reading {url}")
    return bytes(body), False
