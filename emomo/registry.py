"""Name -> implementation registries for every pluggable backend.

Each registry maps a name used in the config file to a dotted path, loaded
only when a component is built: validating a config never imports an SDK.
Adding a backend is one module and one line here.
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
}

OBJECT_STORES: dict[str, Backend] = {
    "local": Backend("emomo.storage.local.LocalObjectStore"),
}

DESCRIBERS: dict[str, Backend] = {
    "local": Backend("emomo.providers.ocr_describer.OCRDescriber"),
}

EMBEDDERS: dict[str, Backend] = {
    "local": Backend("emomo.providers.local_embedder.LocalEmbedder"),
}


def load_backend(registry: dict[str, Backend], name: str) -> Any:
    return load_object(registry[name].path)
