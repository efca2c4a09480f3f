"""docs/configuration.md, made from the config models so that it cannot drift from them.

    python -m emomo.configdoc > docs/configuration.md

Each key's default comes from its model, its meaning from the ``#:`` comment above it in
emomo/config.py; the environment variables from the code that reads them.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import BaseModel, SecretStr

from emomo import config, registry

#: the sections of a config file, in the order a reader meets them
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("database", config.DatabaseConfig),
    ("qdrant", config.QdrantConfig),
    ("storage", config.StorageConfig),
    ("vlm", config.VLMConfig),
    ("embeddings[]", config.EmbeddingConfig),
    ("ingest", config.IngestConfig),
    ("dedupe", config.DedupeConfig),
    ("sources.chinesebqb", config.ChineseBQBSourceConfig),
    ("sources.staging", config.StagingSourceConfig),
    ("server", config.ServerConfig),
]


def comments(model: type[BaseModel]) -> dict[str, str]:
    """The ``#:`` comment above each field of ``model``, joined into one line."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(model).splitlines():
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", text)
        if match and match.group(1) in model.model_fields:
            found[match.group(1)] = " ".join(pending)
        pending = []
    return found


def default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "(required)"
    value: Any = field.default
    if isinstance(value, SecretStr):
        return '""'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def environment() -> list[tuple[str, str]]:
    """Every environment variable the config reads, and what it fills."""
    found = [(var, f"{section}.{key}") for section, key, var in config.ENVIRONMENT]
    found += [("EMOMO_CONFIG", "the path of a config file over the defaults")]
    for kind, backends in (("vlm", registry.DESCRIBERS), ("embeddings[]", registry.EMBEDDERS)):
        for name, backend in backends.items():
            if backend.key_env:
                found.append((backend.key_env, f"{kind}.api_key when provider is {name}"))
            if backend.base_url_env:
                found.append((backend.base_url_env, f"{kind}.base_url when provider is {name}"))
    for name, preset in config.PRESETS.items():
        for key in ("api_key_env", "base_url_env"):
            if preset.get(key):
                found.append((preset[key], f"embeddings[{name}].{key[:-4]}"))
    unique: dict[str, str] = {}
    for var, what in found:
        unique.setdefault(var, what)
    return sorted(unique.items())


def render() -> str:
    out = ["# Configuration", "",
           "Made by `python -m emomo.configdoc` from the config models (emomo/config.py): the defaults",
           "and meanings below are the code's. A file of your own (`EMOMO_CONFIG=path`, or",
           "`-s EMOMO_CONFIG=path`) needs only what it changes; `embeddings` adds to the presets (an",
           "entry of a preset's name replaces it). How files, presets and the environment combine:",
           "[configuration-guide.md](configuration-guide.md).", ""]
    for section, model in SECTIONS:
        notes = comments(model)
        out += [f"## `{section}`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for name in model.model_fields:
            out.append(f"| `{section}.{name}` | `{default(model, name)}` | {notes.get(name, '')} |")
        out.append("")
    out += ["## Presets of `embeddings`", "", "| name | provider | model | dimensions | collection |",
            "| --- | --- | --- | --- | --- |"]
    for name, preset in config.PRESETS.items():
        out.append(f"| `{name}` | {preset['provider']} | {preset['model']} | {preset['dimensions']} | "
                   f"`{preset['collection']}` |")
    out += ["", "## Environment variables", "", "| variable | fills |", "| --- | --- |"]
    out += [f"| `{var}` | {what} |" for var, what in environment()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
