"""The one place that builds clients for external systems.

Every component (pipelines, commands, spiders) gets its database, index,
object store, describer and embedder from here, so each backend is chosen by
configuration alone and built once per process.
"""

from __future__ import annotations

from emomo import registry
from emomo.config import EmbeddingConfig, EmomoConfig
from emomo.providers import Describer, Embedder
from emomo.repositories import MemeRepository
from emomo.repositories.vector_index import VectorIndex
from emomo.storage import ObjectStore


def build_repository(config: EmomoConfig) -> MemeRepository:
    cls = registry.load_backend(registry.DATABASES, config.database.driver)
    repo: MemeRepository = cls(config.database)
    return repo


def build_index(config: EmomoConfig) -> VectorIndex:
    """Qdrant Edge in this process when ``qdrant.path`` is set, else a Qdrant server."""
    cls = registry.load_backend(registry.INDEXES, "edge" if config.qdrant.embedded else "server")
    index: VectorIndex = cls(config.qdrant)
    return index


def build_store(config: EmomoConfig) -> ObjectStore:
    cls = registry.load_backend(registry.OBJECT_STORES, config.storage.type)
    store: ObjectStore = cls(config.storage)
    return store


def build_describer(config: EmomoConfig) -> Describer:
    cls = registry.load_backend(registry.DESCRIBERS, config.vlm.provider)
    describer: Describer = cls(config.vlm, config.ingest)
    return describer


def build_embedder(embedding: EmbeddingConfig) -> Embedder:
    cls = registry.load_backend(registry.EMBEDDERS, embedding.provider)
    embedder: Embedder = cls(embedding)
    return embedder
