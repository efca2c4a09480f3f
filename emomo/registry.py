"""Name -> implementation registries for every pluggable backend.

Each registry maps a name used in the config file to a dotted path, loaded
only when a component is built: validating a config never imports an SDK.
Adding a backend is one module and one line here; a config may also name a
class by its dotted path (``provider: mypackage.MyDescriber``), as Scrapy
settings name components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scrapy.utils.misc import load_object


@dataclass(frozen=True)
class Backend:
    path: str
    #: environment variable that holds the API key when the config names none;
    #: None means the backend needs no key.
    key_env: str | None = None
    #: environment variable that holds the base URL when the config names none.
    base_url_env: str | None = None


DATABASES: dict[str, Backend] = {
    "sqlite": Backend("emomo.repositories.sqlite.SQLiteMemeRepository"),
    "postgres": Backend("emomo.repositories.postgres.PostgresMemeRepository"),
}

#: the embedded index (qdrant.path) and a Qdrant server (qdrant.url / qdrant.host)
INDEXES: dict[str, Backend] = {
    "edge": Backend("emomo.repositories.qdrant_edge_index.EdgeIndex"),
    "server": Backend("emomo.repositories.qdrant_client_index.QdrantClientIndex"),
}

OBJECT_STORES: dict[str, Backend] = {
    "local": Backend("emomo.storage.local.LocalObjectStore"),
    "s3": Backend("emomo.storage.s3.S3ObjectStore"),
    "r2": Backend("emomo.storage.s3.S3ObjectStore"),
}

DESCRIBERS: dict[str, Backend] = {
    "local": Backend("emomo.providers.ocr_describer.OCRDescriber"),
    "openai": Backend("emomo.providers.openai_vlm.OpenAIDescriber", key_env="OPENAI_API_KEY",
                      base_url_env="OPENAI_BASE_URL"),
}

EMBEDDERS: dict[str, Backend] = {
    "local": Backend("emomo.providers.local_embedder.LocalEmbedder"),
    "jina": Backend("emomo.providers.openai_embedder.JinaEmbedder", key_env="JINA_API_KEY"),
    "openai": Backend("emomo.providers.openai_embedder.OpenAIEmbedder", key_env="OPENAI_API_KEY",
                      base_url_env="OPENAI_BASE_URL"),
    "modelscope": Backend("emomo.providers.openai_embedder.OpenAIEmbedder", key_env="MODELSCOPE_API_KEY",
                          base_url_env="MODELSCOPE_BASE_URL"),
}


def backend(registry: dict[str, Backend], name: str) -> Backend | None:
    """The registered backend, or one named by its dotted path (a class of the
    user's own, taking the same config section); None when neither."""
    if name in registry:
        return registry[name]
    if "." in name:
        return Backend(name)
    return None


def load_backend(registry: dict[str, Backend], name: str) -> Any:
    found = backend(registry, name)
    if found is None:
        raise KeyError(name)
    return load_object(found.path)
