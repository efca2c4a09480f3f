"""What every client of an OpenAI-compatible API shares: the client and its error classes."""

from __future__ import annotations

from typing import Any

from emomo.providers.retry import ProviderError, status_error


def async_client(api_key: str, base_url: str, timeout: float) -> Any:
    from openai import AsyncOpenAI

    # Our own retry loop counts, logs and honours Retry-After: the SDK's stays off.
    return AsyncOpenAI(api_key=api_key or "unused", base_url=base_url, timeout=timeout, max_retries=0)


def provider_error(exc: Exception, what: str, key_setting: str) -> ProviderError:
    """An openai SDK exception as a ProviderError whose message names the setting to fix."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"{what}: timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"{what}: cannot connect ({exc.__cause__ or exc})", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        detail = exc.message if isinstance(exc.message, str) else str(exc.message)
        return status_error(what, exc.status_code, detail, exc.response.headers.get("retry-after"), key_setting)
    return ProviderError(f"{what}: {type(exc).__name__}: {exc}", retryable=False)
