"""A stage that fails undoes the item's writes and the crawl goes on; a crawl killed half-way
and run again ends as one clean run did."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from conftest import assert_consistent, count_memes, crawl, kill, read_state, start_crawl, wait_for
from crawling import run_crawl
from flaky_providers import FAILING
from memegen import CAPTIONS, CATEGORIES, build_tree

from emomo.config import load_config

COLLECTION = "emomo-e5-small"


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory, cjk_font: str) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("small") / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[:48], CATEGORIES, seed=11)
    return root, planted


def migrate(workdir: Path) -> None:
    """The embedded database, created as a crawl's start creates it."""
    from emomo import clients

    async def run() -> None:
        repo = clients.build_repository(load_config(env={}, base_dir=workdir))
        await repo.open()
        await repo.close()
    asyncio.run(run())


def test_an_unavailable_embedder_parks_its_batches_whole_and_a_rerun_completes_them(
        small_tree: tuple[Path, list], tmp_path: Path) -> None:
    root, planted = small_tree
    (tmp_path / "flaky.yaml").write_text(
        "embeddings:\n"
        "  - {name: flaky, provider: flaky_providers.FlakyEmbedder, model: multilingual-e5-small,\n"
        f"     dimensions: 384, collection: {COLLECTION}, is_default: true}}\n",
        encoding="utf-8")
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_CONFIG": "flaky.yaml"})
    failing = {p.md5 for p in planted if p.caption in FAILING}
    assert len(failing) == 3
    state = read_state(tmp_path)
    # The service failed for whole batches (a 503 is nobody's fault): every item in such a batch is
    # parked, none is sent again alone. Parked, not undone: object and described row stay, no vector.
    pending = {m["md5_hash"]: m for m in state.memes if m["status"] == "pending"}
    assert failing <= set(pending)
    assert state.active_md5s() == {p.md5 for p in planted} - set(pending)
    assert all(m["vlm_description"] for m in pending.values())
    assert state.objects == sorted(m["storage_key"] for m in state.memes)
    assert not {v["md5_hash"] for v in state.vectors} & set(pending)
    assert run.stat("emomo/embed/failed") == run.stat("emomo/ingest/pending") == len(pending)
    assert run.stat("emomo/ingest/processed") == len(planted) - len(pending)
    # No batch was split into calls of one: as many embedding calls as batches.
    assert run.stat("emomo/batch/embed/items") == len(planted)
    warnings = run.lines("embed failed for ", "WARNING")
    assert len(warnings) == len(pending)
    assert all("embedding service unavailable" in w and "recorded as pending" in w for w in warnings)
    assert f"{len(planted) - len(pending)} processed, {len(pending)} pending" in run.summary()

    # Once the provider is healthy (the default config), a re-run completes just those,
    # reusing their descriptions and objects.
    again = run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    assert again.stat("emomo/ingest/processed") == len(pending)
    assert again.stat("emomo/ingest/duplicate") == len(planted) - len(pending)
    assert again.stat("emomo/describe/reused") == len(pending) and "emomo/describe/described" not in again.stats
    final = read_state(tmp_path)
    assert final.active_md5s() == {p.md5 for p in planted}
    assert_consistent(final, COLLECTION)


def test_a_failing_write_undoes_the_items_object_row_and_point(small_tree: tuple[Path, list],
                                                               tmp_path: Path) -> None:
    root, planted = small_tree
    migrate(tmp_path)
    doomed = [p.md5 for p in planted[5:8]]
    conn = sqlite3.connect(tmp_path / "data" / "emomo.db")
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON meme_vectors WHEN NEW.md5_hash IN "
        f"({', '.join(repr(m) for m in doomed)}) BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    conn.commit()
    conn.close()
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    state = read_state(tmp_path)
    assert state.active_md5s() == {p.md5 for p in planted} - set(doomed)
    assert_consistent(state, COLLECTION)  # objects, rows and points of the doomed three are gone
    assert not {p.get("md5") for p in state.points[COLLECTION].values()} & set(doomed)
    assert run.stat("emomo/index/failed") == 3
    assert run.stat("emomo/ingest/failed") == 3
    assert run.stat("item_dropped_reasons_count/StageFailed") == 3
    errors = run.lines("index failed for ", "ERROR")
    assert len(errors) == 3 and all("database or disk is full" in e for e in errors)


@pytest.mark.slow
def test_killed_crawl_run_again_ends_like_one_clean_run(small_tree: tuple[Path, list], tmp_path: Path) -> None:
    root, planted = small_tree
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean_dir.mkdir()
    killed_dir.mkdir()
    run_crawl(clean_dir, "chinesebqb", repo_path=str(root))
    clean = read_state(clean_dir)
    assert len(clean.memes) == len(planted)

    proc = start_crawl(killed_dir, "chinesebqb", "-a", f"repo_path={root}")
    try:
        assert wait_for(lambda: count_memes(killed_dir) >= 12, timeout=240), "the crawl made no progress"
    finally:
        kill(proc)
    half = count_memes(killed_dir)
    assert 12 <= half < len(planted), half

    run = crawl(killed_dir, "chinesebqb", "-a", f"repo_path={root}")
    assert "emomo/ingest/failed" not in run.stats
    assert run.stat("emomo/ingest/processed") + run.stat("emomo/ingest/duplicate") == len(planted)
    assert run.stat("emomo/ingest/duplicate") >= half
    resumed = read_state(killed_dir)
    assert resumed.comparable() == clean.comparable()
    assert_consistent(resumed, COLLECTION)


def test_thin_pictures_and_wordless_errors_never_poison_their_neighbours_and_retries_end(
        tmp_path: Path, cjk_font: str) -> None:
    import io

    from memegen import meme_bytes
    from PIL import Image

    category = tmp_path / "ChineseBQB" / "001Funny_滑稽BQB"
    category.mkdir(parents=True)
    for caption, seed in (("今天也要加油", 1), ("这个锅我不背", 2), ("下班了吗", 3)):
        (category / f"滑稽{seed:05d}-{caption}.png").write_bytes(meme_bytes(caption, seed, "png"))
    for name, size in (("细条00001.png", (1, 20000)), ("细条00002.png", (3000, 2))):
        buf = io.BytesIO()
        Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
        (category / name).write_bytes(buf.getvalue())
    (tmp_path / "mute.yaml").write_text(
        "embeddings:\n"
        "  - {name: mute, provider: flaky_providers.MuteFailingEmbedder, model: multilingual-e5-small,\n"
        f"     dimensions: 384, collection: {COLLECTION}, is_default: true, batch_size: 1}}\n", encoding="utf-8")
    settings = {"EMOMO_CONFIG": "mute.yaml"}
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(tmp_path / "ChineseBQB"), settings=settings)
    memes = {m["source_id"].rsplit("/", 1)[1]: m for m in read_state(tmp_path).memes}
    # The thin pictures are read (no text on them) and described by their names; the failing
    # caption's error, though it has no message, is named by its type and parks that meme alone.
    assert {name: m["status"] for name, m in memes.items()} == {
        "滑稽00001-今天也要加油.png": "active", "滑稽00002-这个锅我不背.png": "pending",
        "滑稽00003-下班了吗.png": "active", "细条00001.png": "active", "细条00002.png": "active"}
    failing = memes["滑稽00002-这个锅我不背.png"]
    assert (failing["attempts"], failing["last_error"]) == (1, "RuntimeError (no message)")
    [warning] = run.lines("embed failed", "WARNING")
    assert warning.endswith(": RuntimeError (no message); the meme is recorded as pending")
    assert run.stat("emomo/ingest/processed") == 4 and run.stat("emomo/ingest/pending") == 1
    # `scrapy crawl pending` tries again; the third failure (ingest.max_attempts: 3) is the last.
    second = run_crawl(tmp_path, "pending", settings=settings)
    assert second.stat("emomo/ingest/pending") == 1
    third = run_crawl(tmp_path, "pending", settings=settings)
    assert third.stat("emomo/ingest/failed") == 1 and "emomo/ingest/pending" not in third.stats
    [failed] = [m for m in read_state(tmp_path).memes if m["status"] != "active"]
    assert (failed["status"], failed["attempts"], failed["last_error"]) == ("failed", 3, "RuntimeError (no message)")
    fourth = run_crawl(tmp_path, "pending", settings=settings)
    assert "emomo/ingest/failed" not in fourth.stats and "emomo/ingest/pending" not in fourth.stats
