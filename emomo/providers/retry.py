"""Retries for paid APIs: exponential backoff with jitter, honouring Retry-After.

Every remote provider classifies its own errors into ProviderError; this
module only decides when to try again and how long to wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger("emomo.providers")


class ProviderError(RuntimeError):
    """A call to a provider failed.

    ``retryable``: trying again may help (429, 5xx, timeouts). ``item_fault``:
    the request for this item is bad (the model refused this image) and will
    stay bad. ``fatal``: no item can succeed (the key was refused).
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 item_fault: bool = False, fatal: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.item_fault = item_fault
        self.fatal = fatal


def status_error(what: str, status: int, detail: str, retry_after: str | None, key_setting: str) -> ProviderError:
    """The ProviderError for an HTTP error status; the message names the setting to fix."""
    if status in (401, 403):
        return ProviderError(f"{what}: the API key was refused (HTTP {status}); check {key_setting}",
                             retryable=False, fatal=True)
    return ProviderError(
        f"{what}: HTTP {status}: {detail[:300]}", retryable=retryable_status(status),
        retry_after=retry_after_seconds(retry_after),
        item_fault=status in (400, 413, 415, 422),
    )


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def retryable_status(status: int) -> bool:
    return status in (408, 409, 425, 429) or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries in all, the first included
    base_delay: float = 1.0
    #: the longest wait before a retry; a Retry-After beyond it parks the item instead
    max_delay: float = 30.0
    #: how messages name ``max_delay``
    max_delay_setting: str = "the retry cap"

    def delay(self, retry: int, retry_after: float | None) -> float:
        # Full jitter spreads the retries of many items in flight over the window.
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** retry))
        if retry_after is not None:
            return min(max(retry_after, backoff), self.max_delay)
        return backoff


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str,
                       on_retry: Callable[[], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> T:
    """``call()``, again after a retryable ProviderError; the last error once the attempts are
    spent, or at once when ``should_stop()`` says the crawl is stopping (the item is parked)."""
    for attempt in range(policy.attempts):
        try:
            return await call()
        except ProviderError as exc:
            if not exc.retryable or attempt + 1 >= policy.attempts or (should_stop and should_stop()):
                raise
            if exc.retry_after is not None and exc.retry_after > policy.max_delay:
                # An hour's wait would hold a slot (and the crawl) for an hour: give up now, park the item.
                raise ProviderError(
                    f"{exc}; its Retry-After of {exc.retry_after:g} s is over {policy.max_delay_setting}="
                    f"{policy.max_delay:g}: not waited for", retryable=False) from None
            wait = policy.delay(attempt, exc.retry_after)
            logger.info("%s: %s; retry %d/%d in %.1f s", what, exc, attempt + 1, policy.attempts - 1, wait)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
