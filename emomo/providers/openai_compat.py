"""The one factory of OpenAI-compatible API clients (VLM, embeddings, Jina), on the openai SDK.

The SDK retries 408/409/429/5xx and timeouts with backoff and honours Retry-After up to two
minutes. A response hook adds two decisions of ours through the SDK's own ``x-should-retry``
header: a Retry-After beyond our cap is not waited for (the item is parked at once instead of
holding a slot), and once the crawl is stopping nothing is retried. The same hook tells the
call's adaptive limit (emomo.providers.concurrency) of every push-back, and leaves a 429 to it:
the call waits out its Retry-After without holding a slot.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from emomo.providers import never
from emomo.providers.concurrency import CALL
from emomo.providers.errors import retry_after_seconds

#: whether the crawl is stopping, for the calls made in this context (set around each call)
STOPPING: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar("emomo_stopping", default=never)
#: answers that say "fewer calls at once": rate limited, overloaded, or failing under load
PUSH_BACK = frozenset({429, 500, 502, 503, 504, 529})


def async_client(api_key: str, base_url: str, timeout: float, max_retries: int, max_delay: float,
                 connections: int = 100) -> Any:
    import httpx2
    from openai import AsyncOpenAI, DefaultAsyncHttpx2Client

    async def on_response(response: Any) -> None:
        if response.status_code < 400:
            return
        wait = retry_after_seconds(response.headers)
        report = CALL.get()
        if report is not None and (response.status_code in PUSH_BACK or wait is not None):
            report.congested()
        # A 429 under an adaptive limit is waited out by AdaptiveLimit.run, without its slot.
        rate_limited = response.status_code == 429 and report is not None
        if STOPPING.get()() or (wait is not None and wait > max_delay) or rate_limited:
            response.headers["x-should-retry"] = "false"

    http_client = DefaultAsyncHttpx2Client(
        event_hooks={"response": [on_response]},
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
    )
    return AsyncOpenAI(api_key=api_key or "unused", base_url=base_url, timeout=timeout, max_retries=max_retries,
                       http_client=http_client)
