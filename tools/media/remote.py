"""An attached URL's bytes, fetched under `fetch_url`'s guards (allowed hosts, every redirect
hop checked, one wall-clock deadline), refused rather than truncated when too large: half
a PDF or an image cut short is no use to anyone.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import PurePosixPath

import httpx

from foreman.errors import FetchError, MediaRefused, ToolRefused
from foreman.tools.http import (
    DEADLINE_GRACE_S,
    USER_AGENT,
    HttpPolicy,
    _check,
    _deadline_error,
    _parse,
    _Progress,
    _run_on_own_loop,
)

TOOL = "attach"


def url_name(url: str) -> str:
    """The file name a URL ends in (its suffix decides the kind), 'download' when none."""
    return PurePosixPath(httpx.URL(url).path).name or "download"


def fetch_bytes(url: str, policy: HttpPolicy, max_bytes: int) -> bytes:
    """GET `url` from an allowed host; MediaRefused when the body is over `max_bytes`."""
    progress = _Progress(_parse(url))
    _check(progress.url, policy, "the URL")
    started = time.monotonic()
    try:
        return _run_on_own_loop(lambda: _fetch(url, progress, policy, max_bytes, started + policy.timeout_s),
                                wait_s=policy.timeout_s + DEADLINE_GRACE_S)
    except (TimeoutError, httpx.TimeoutException):
        raise _deadline_error(progress, policy, time.monotonic() - started) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise FetchError(f"Fetching {progress.url} failed: {type(exc).__name__}: {exc}. "
                         "Check that the server is up and the URL is right.") from None


async def _fetch(url: str, progress: _Progress, policy: HttpPolicy, max_bytes: int, deadline: float) -> bytes:
    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
        async with httpx.AsyncClient(follow_redirects=False, timeout=policy.timeout_s, trust_env=False,
                                     headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}) as client:
            for hop in range(policy.max_redirects + 1):
                progress.phase = "connecting and waiting for the response headers"
                async with client.stream("GET", progress.url) as response:
                    if response.is_redirect:
                        target = progress.url.join(response.headers["location"])
                        _check(target, policy, f"redirect {hop + 1} to")
                        progress.url = target
                        continue
                    if response.status_code >= 400:
                        raise FetchError(f"{progress.url} answered HTTP {response.status_code} "
                                         f"{response.reason_phrase}; check the URL or try again later.")
                    progress.phase = "reading the body"
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > max_bytes:
                            raise MediaRefused(TOOL, f"{url} is larger than the {max_bytes / 1e6:.0f} MB limit for "
                                                     "one attached file; attach a smaller file or raise "
                                                     "FOREMAN_MEDIA_MAX_FILE_MB")
                    return bytes(body)
    raise ToolRefused(TOOL, f"{url} redirected more than {policy.max_redirects} times; attach the final URL")
