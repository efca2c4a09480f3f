"""The one factory of OpenAI-compatible API clients (VLM, embeddings, Jina), on the openai SDK.

The SDK retries 408/409/429/5xx and timeouts with backoff and honours Retry-After up to two
minutes. A response hook adds two decisions of ours through the SDK's own ``x-should-retry``
header: a Retry-After beyond our cap is not waited for (the item is parked at once instead of
holding a slot), and once the crawl is stopping nothing is retried.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from emomo.providers.errors import retry_after_seconds


def _never() -> bool:
    return False


#: whether the crawl is stopping, for the calls made in this context (set around each call)
STOPPING: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar("emomo_stopping", default=_never)


def async_client(api_key: str, base_url: str, timeout: float, max_retries: int, max_delay: float,
                 connections: int = 100) -> Any:
    import httpx2
    from openai import AsyncOpenAI, DefaultAsyncHttpx2Client

    async def on_response(response: Any) -> None:
        if response.status_code < 400:
            return
        wait = retry_after_seconds(response.headers)
        if STOPPING.get()() or (wait is not None and wait > max_delay):
            response.headers["x-should-retry"] = "false"

    http_client = DefaultAsyncHttpx2Client(
        event_hooks={"response": [on_response]},
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
    )
    return AsyncOpenAI(api_key=api_key or "unused", base_url=base_url, timeout=timeout, max_retries=max_retries,
                       http_client=http_client)
