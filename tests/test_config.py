"""The config fails at start with a message that names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import scrapy
from crawling import run_crawl
from scrapy.exceptions import UsageError

from emomo.config import load_config
from emomo.errors import ConfigError

TWO = """
embeddings:
  - {name: local, provider: local, model: multilingual-e5-small, dimensions: 384,
     collection: emomo-e5-small, is_default: true}
  - {name: jina, provider: jina, model: jina-embeddings-v3, api_key_env: JINA_API_KEY,
     dimensions: 1024, collection: emomo}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_default_is_the_embedded_one(tmp_path: Path) -> None:
    cfg = load_config(env={}, base_dir=tmp_path)
    assert cfg.database.driver == "sqlite"
    assert cfg.database.path == str(tmp_path / "data" / "emomo.db")
    assert cfg.qdrant.path == str(tmp_path / "data" / "qdrant")
    assert cfg.storage.type == "local" and cfg.storage.path == str(tmp_path / "data" / "objects")
    assert cfg.vlm.provider == "local"
    emb = cfg.embedding()
    assert (emb.name, emb.provider, emb.dimensions, emb.collection, emb.is_default) == (
        "local", "local", 384, "emomo-e5-small", True)


def test_sections_left_out_keep_the_defaults_and_env_selects_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "storage:\n  path: ./elsewhere\nsources:\n  staging:\n    path: /srv/staging\n")
    cfg = load_config(env={"EMOMO_CONFIG": str(path)}, base_dir=tmp_path)
    assert cfg.origin == str(path)
    assert cfg.storage.path == str(tmp_path / "elsewhere")
    assert cfg.storage.type == "local"
    assert cfg.database.path == str(tmp_path / "data" / "emomo.db")
    assert cfg.sources.staging.path == "/srv/staging"
    assert cfg.sources.chinesebqb.repo_path == str(tmp_path / "data" / "ChineseBQB")


@pytest.mark.parametrize(("text", "message"), [
    (TWO.replace("is_default: true", "is_default: false"),
     "no embedding has is_default: true; mark exactly one"),
    (TWO.replace("collection: emomo}", "collection: emomo, is_default: true}"),
     "2 embeddings have is_default: true (local, jina); mark exactly one"),
    (TWO.replace("provider: jina", "provider: jinaa"),
     "embeddings[jina].provider: unknown value 'jinaa' (known: jina, local"),
    ("vlm:\n  provider: gpt\n", "vlm.provider: unknown value 'gpt' (known: local"),
    ("storage:\n  type: ftp\n", "storage.type: unknown value 'ftp'"),
    ("storage:\n  bukket: x\n", "unknown key storage.bukket"),
    ("ingest:\n  max_pixels: many\n", "ingest.max_pixels must be int, got 'many'"),
    ("qdrant: [1, 2]\n", "qdrant must be a mapping"),
    ("embeddings: {name: x}\n", "embeddings must be a non-empty list"),
])
def test_invalid_configs_name_the_key_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={}, base_dir=tmp_path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_unknown_embedding_lists_the_known_ones(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, TWO), env={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"unknown embedding 'qwn3' \(known: local, jina, qwen3\)"):
        cfg.embedding("qwn3")


def test_the_seeds_embeddings_are_presets_a_users_file_can_override_or_add_to(tmp_path: Path) -> None:
    cfg = load_config(env={"MODELSCOPE_API_KEY": "ms", "JINA_API_KEY": "jn"}, base_dir=tmp_path)
    jina, qwen3 = cfg.embedding("jina"), cfg.embedding("qwen3")
    assert (jina.provider, jina.model, jina.dimensions, jina.collection) == (
        "jina", "jina-embeddings-v3", 1024, "emomo")
    assert (qwen3.provider, qwen3.model, qwen3.dimensions, qwen3.collection, qwen3.base_url) == (
        "modelscope", "Qwen/Qwen3-Embedding-8B", 4096, "emomo-qwen3-embedding-8b",
        "https://api-inference.modelscope.cn/v1")
    assert cfg.embedding().name == "local"
    moved = load_config(env={"MODELSCOPE_API_KEY": "ms", "MODELSCOPE_BASE_URL": "http://127.0.0.1:9/v1"})
    assert moved.embedding("qwen3").base_url == "http://127.0.0.1:9/v1"
    path = write(tmp_path, "embeddings:\n  - {name: qwen3, provider: modelscope, model: Qwen/Qwen3-Embedding-0.6B,\n"
                           "     dimensions: 1024, collection: small-qwen, is_default: true}\n"
                           "  - {name: mine, provider: local, model: multilingual-e5-small, dimensions: 384,\n"
                           "     collection: emomo-e5-small}\n")
    own = load_config(path, env={"MODELSCOPE_API_KEY": "ms"}, base_dir=tmp_path)
    assert [e.name for e in own.embeddings] == ["jina", "qwen3", "mine"]  # local gave its collection up
    assert own.embedding().name == "qwen3" and own.embedding().model == "Qwen/Qwen3-Embedding-0.6B"


def test_missing_api_key_names_the_variable_and_never_prints_a_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, TWO), env={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="embeddings\\[jina\\].api_key is empty: set the JINA_API_KEY"):
        cfg.embedding("jina")
    cfg = load_config(write(tmp_path, TWO), env={"JINA_API_KEY": "jina_secret_123"}, base_dir=tmp_path)
    emb = cfg.embedding("jina")
    assert emb.api_key.get_secret_value() == "jina_secret_123"
    for shown in (repr(emb), str(emb), repr(cfg), cfg.model_dump_json()):
        assert "jina_secret_123" not in shown
    assert cfg.secrets() == ["jina_secret_123"]


def test_unreadable_config_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file .*nope.yaml .*fix EMOMO_CONFIG"):
        load_config(tmp_path / "nope.yaml", env={}, base_dir=tmp_path)


@pytest.mark.parametrize(("args", "message"), [
    ({"embedding": "qwn3"}, "unknown embedding 'qwn3' (known: local, jina, qwen3)"),
    ({"embedding": "qwen3"}, "embeddings[qwen3].api_key is empty: set the MODELSCOPE_API_KEY environment variable"),
    ({"limt": "3"}, "unknown argument -a limt=… for spider chinesebqb (known: embedding, limit, force, shard, "
                    "repo_path; scrapy args chinesebqb tells what each does)"),
    ({"limit": "-3"}, "-a limit=-3: expected a positive whole number"),
    ({"force": "maybe"}, "-a force=maybe: expected 1 or 0"),
    ({}, "ChineseBQB clone not found at {tmp}/data/ChineseBQB"),
])
def test_crawl_refuses_bad_arguments_before_it_starts(tmp_path: Path, args: dict[str, str], message: str) -> None:
    with pytest.raises((UsageError, ConfigError)) as err:
        run_crawl(tmp_path, "chinesebqb", **args)
    assert message.format(tmp=tmp_path) in str(err.value)


def test_the_crawl_command_refuses_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    run = scrapy(tmp_path, "crawl", "chinesebqb", "-a", "embedding=qwen3", env={"MODELSCOPE_API_KEY": ""})
    assert run.returncode == 2, run.stderr
    [line] = run.stderr.strip().splitlines()  # no banner before it, no usage after it
    assert line.endswith(
        "ERROR: Cannot start the crawl: embeddings[qwen3].api_key is empty: set the MODELSCOPE_API_KEY environment "
        "variable (or api_key_env for 'qwen3' in a config file of your own (EMOMO_CONFIG=path))")
    typo = scrapy(tmp_path, "crawl", "chinesebqb", "-a", "limt=3")
    assert typo.returncode == 2 and typo.stderr.strip().splitlines()[0].endswith(
        "ERROR: Cannot start the crawl: unknown argument -a limt=… for spider chinesebqb (known: embedding, limit, "
        "force, shard, repo_path; scrapy args chinesebqb tells what each does)")


def test_the_spiders_say_what_they_are_for_and_what_they_take(tmp_path: Path) -> None:
    # scrapyd finds a project's spiders in `scrapy list`: names alone, one a line
    assert scrapy(tmp_path, "list").stdout.splitlines() == ["chinesebqb", "fabiaoqing", "pending", "staging"]
    listed = scrapy(tmp_path, "list", "--long").stdout.splitlines()
    assert listed[0].split(None, 1) == ["chinesebqb", "Ingest a local clone of the ChineseBQB repository"]
    assert [line.split()[0] for line in listed] == ["chinesebqb", "fabiaoqing", "pending", "staging"]
    args = scrapy(tmp_path, "args", "fabiaoqing").stdout
    assert "-a max_pages=N" in args and "at most N list pages" in args and "-a frontier=redis://" in args


def test_dimension_that_differs_from_the_collection_stops_the_crawl(tmp_path: Path, cjk_font: str) -> None:
    repo = Path(__file__).resolve().parent.parent / "samples" / "ChineseBQB"
    run_crawl(tmp_path, "chinesebqb", repo_path=str(repo), limit="2")
    # Another model (512-d) pointed at the collection the first crawl filled with 384-d vectors.
    write(tmp_path, "embeddings:\n  - {name: local, provider: flaky_providers.PaddedEmbedder, model: wider,\n"
                    "     dimensions: 512, collection: emomo-e5-small, is_default: true}\n")
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(repo), settings={"EMOMO_CONFIG": "config.yaml"})
    assert run.finish_reason == "backend_unavailable"  # scrapy crawl exits 2 for it (test_production)
    [line] = run.lines("Cannot start the crawl", "ERROR")
    assert ("embeddings[local].dimensions is 512 but the Qdrant collection 'emomo-e5-small' "
            "holds 384-dimensional vectors") in line
    assert "emomo/ingest/processed" not in run.stats


@pytest.mark.parametrize(("text", "message"), [
    ("ingest:\n  workers: 8\n", "ingest.workers is not a setting here: items in flight are the Scrapy setting "
                                 "EMOMO_MAX_ITEMS_IN_FLIGHT"),
    ("ingest:\n  retry_count: 3\n", "ingest.retry_count is not a setting here: retries are vlm.retries"),
    ("ingest:\n  batch_size: 100\n", "ingest.batch_size is not a setting here"),
    ("sources:\n  chinesebqb:\n    enabled: true\n", "sources.chinesebqb.enabled is not a setting here"),
    ("server:\n  mode: debug\n", "server.mode is not a setting here"),
    ("serverr:\n  port: 1\n", "unknown section 'serverr'"),
    ("embeddings:\n  - {name: x, provider: local, model: m}\n", "embeddings[x]: missing key dimensions"),
    ("embeddings:\n  - {name: x, provider: local, model: m, dimensions: 0, is_default: true}\n",
     "embeddings[x].dimensions must be >= 1, got 0"),
])
def test_the_seeds_keys_that_mean_nothing_here_say_what_replaces_them(tmp_path: Path, text: str,
                                                                      message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={}, base_dir=tmp_path)
    assert message in str(err.value)


def test_the_seeds_database_keys_make_the_dsn_and_a_server_replaces_the_embedded_index(tmp_path: Path) -> None:
    text = ("database:\n  driver: postgres\n  host: db.internal\n  port: 5433\n  user: emomo\n  dbname: memes\n"
            "server:\n  port: 9090\n")
    cfg = load_config(write(tmp_path, text), env={"QDRANT_HOST": "qdrant.internal"}, base_dir=tmp_path)
    assert cfg.database.dsn() == "postgresql://emomo@db.internal:5433/memes"
    assert (cfg.qdrant.host, cfg.qdrant.path) == ("qdrant.internal", "")
    assert cfg.server.port == 9090
    # DATABASE_URL wins over the parts, and its password never prints
    cfg = load_config(write(tmp_path, text), env={"DATABASE_URL": "postgresql://u:pw-SECRET@h/d"}, base_dir=tmp_path)
    assert cfg.database.dsn() == "postgresql://u:pw-SECRET@h/d"
    assert "pw-SECRET" not in repr(cfg) and cfg.secrets() == ["pw-SECRET"]
