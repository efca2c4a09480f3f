"""Jina embeddings API: ``POST {base_url}/embeddings`` with a task per side."""

from __future__ import annotations

from typing import Any

import httpx

from emomo.config import EmbeddingConfig
from emomo.providers import embed_in_batches
from emomo.providers.retry import ProviderError, RetryPolicy, status_error, with_retries

DEFAULT_BASE_URL = "https://api.jina.ai/v1"


class JinaEmbedder:
    """Memes are embedded as ``retrieval.passage``, searches as ``retrieval.query``."""

    def __init__(self, config: EmbeddingConfig) -> None:
        self.name = config.name
        self.model = config.model
        self.dimensions = config.dimensions
        self.batch_size = max(1, config.batch_size)
        self.url = (config.base_url or DEFAULT_BASE_URL).rstrip("/") + "/embeddings"
        self.key_setting = config.api_key_env or "JINA_API_KEY"
        self.policy = RetryPolicy(attempts=config.retries + 1)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout, connect=10.0),
            headers={"Authorization": f"Bearer {config.api_key}", "Accept": "application/json"},
        )

    async def _batch(self, texts: list[str], task: str) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.model, "input": texts, "task": task, "dimensions": self.dimensions}
        what = f"embedding {self.name!r} at {self.url}"
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise ProviderError(f"{what}: timed out", retryable=True) from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"{what}: cannot connect ({exc})", retryable=True) from None
        if response.status_code != 200:
            raise status_error(what, response.status_code, response.text, response.headers.get("retry-after"),
                               self.key_setting)
        try:
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            return [list(map(float, d["embedding"])) for d in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"{what}: unexpected answer: {exc}", retryable=False) from None

    async def _embed(self, texts: list[str], task: str) -> list[list[float]]:
        async def batch(chunk: list[str]) -> list[list[float]]:
            return await with_retries(lambda: self._batch(chunk, task), self.policy, f"embedding {self.name}")
        return await embed_in_batches(texts, self.batch_size, self.dimensions, self.name, batch)

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        return await self._embed(texts, "retrieval.passage")

    async def embed_query(self, text: str) -> list[float]:
        return (await self._embed([text], "retrieval.query"))[0]

    async def close(self) -> None:
        await self._client.aclose()
