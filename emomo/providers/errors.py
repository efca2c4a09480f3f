"""What a provider's failure means for the item and the crawl.

The openai SDK does the retrying (429, 5xx, timeouts, with backoff, honouring Retry-After);
what is left here is the classification of the error that comes out of it: a refused key
stops the crawl (``fatal``), a request the API refuses for this item is the item's fault
(``item_fault``: 400, 413, 415, 422) and is not retried or split further, anything else
leaves the item pending for a later run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

#: statuses that blame the request for this very item, not the service
ITEM_FAULTS = (400, 413, 415, 422)
#: upstream text kept in a message: enough to tell why, never a whole echoed request
MAX_DETAIL = 300


class ProviderError(RuntimeError):
    """A call to a provider failed. ``item_fault``: the request for this item is bad and will
    stay bad. ``fatal``: no item can succeed (the key was refused)."""

    def __init__(self, message: str, *, item_fault: bool = False, fatal: bool = False,
                 wait: float | None = None) -> None:
        super().__init__(message)
        self.item_fault = item_fault
        self.fatal = fatal
        #: rate limited: seconds to wait before calling again (the caller waits without its slot)
        self.wait = wait


#: how long to wait after a 429 that names no Retry-After
RATE_LIMIT_WAIT = 1.0


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After (or retry-after-ms) of a response's headers, in seconds."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def status_error(what: str, status: int, detail: str, key_setting: str,
                 retry_after: float | None = None, max_delay: tuple[str, float] | None = None) -> ProviderError:
    """The ProviderError for an HTTP error status; the message names the setting to fix."""
    if status in (401, 403):
        return ProviderError(f"{what}: the API key was refused (HTTP {status}); check {key_setting}", fatal=True)
    message = f"{what}: HTTP {status}: {' '.join(detail.split())[:MAX_DETAIL]}"
    wait = None
    if max_delay is not None and retry_after is not None and retry_after > max_delay[1]:
        message += (f"; its Retry-After of {retry_after:g} s is over {max_delay[0]}={max_delay[1]:g}: "
                    "not waited for")
    elif status == 429:
        wait = retry_after if retry_after is not None else RATE_LIMIT_WAIT
    return ProviderError(message, item_fault=status in ITEM_FAULTS, wait=wait)


def provider_error(exc: Exception, what: str, key_setting: str,
                   max_delay: tuple[str, float] | None = None) -> ProviderError:
    """An openai SDK exception (after its retries) as a ProviderError whose message names the setting."""
    import openai

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"{what}: timed out")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"{what}: cannot connect ({exc.__cause__ or exc})")
    if isinstance(exc, openai.APIStatusError):
        detail = exc.message if isinstance(exc.message, str) else str(exc.message)
        return status_error(what, exc.status_code, detail, key_setting,
                            retry_after_seconds(exc.response.headers), max_delay)
    return ProviderError(f"{what}: {type(exc).__name__}: {exc}")
