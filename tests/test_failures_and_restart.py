"""A stage that fails undoes the item's writes and the crawl goes on; a crawl killed half-way
and run again ends as one clean run did."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import assert_consistent, crawl, kill, read_state, scrapy, start_crawl, wait_for
from flaky_providers import FAILING
from memegen import CAPTIONS, CATEGORIES, build_tree

COLLECTION = "emomo-e5-small"


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory, cjk_font: str) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("small") / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[:48], CATEGORIES, seed=11)
    return root, planted


def test_a_failing_embedder_leaves_pending_memes_that_a_rerun_completes(small_tree: tuple[Path, list],
                                                                        tmp_path: Path) -> None:
    root, planted = small_tree
    (tmp_path / "flaky.yaml").write_text(
        "embeddings:\n"
        "  - {name: flaky, provider: flaky_providers.FlakyEmbedder, model: multilingual-e5-small,\n"
        f"     dimensions: 384, collection: {COLLECTION}, is_default: true}}\n",
        encoding="utf-8")
    run = crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}", "-s", "EMOMO_CONFIG=flaky.yaml")
    failing = {p.md5: p for p in planted if p.caption in FAILING}
    assert len(failing) == 3
    state = read_state(tmp_path)
    # Parked, not undone: the object and the described row stay, as pending, with no vector.
    assert state.active_md5s() == {p.md5 for p in planted} - set(failing)
    pending = {m["md5_hash"]: m for m in state.memes if m["status"] == "pending"}
    assert set(pending) == set(failing)
    for md5, meme in pending.items():
        assert failing[md5].caption in meme["vlm_description"]
    assert state.objects == sorted(m["storage_key"] for m in state.memes)
    assert not {v["md5_hash"] for v in state.vectors} & set(failing)
    assert len(state.points[COLLECTION]) == 45
    assert run.stat("emomo/embed/failed") == 3
    assert run.stat("emomo/ingest/pending") == 3
    assert run.stat("emomo/ingest/processed") == 45
    warnings = [line for line in run.log.splitlines() if "embed failed for " in line]
    assert len(warnings) == 3
    for p in failing.values():
        assert any(str(root / p.rel_path) in w and "embedding service unavailable" in w for w in warnings)
    assert "45 processed, 3 pending, 0 skipped as duplicate, 0 invalid, 0 failed" in run.summary()

    # Once the provider is healthy (the default config), a re-run completes just those three,
    # reusing their descriptions and objects.
    again = crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}")
    assert again.stat("emomo/ingest/processed") == 3
    assert again.stat("emomo/ingest/duplicate") == 45
    assert again.stat("emomo/describe/reused") == 3 and again.stat("emomo/describe/described") == 0
    final = read_state(tmp_path)
    assert final.active_md5s() == {p.md5 for p in planted}
    assert_consistent(final, COLLECTION)


def test_a_failing_write_undoes_the_items_object_row_and_point(small_tree: tuple[Path, list],
                                                               tmp_path: Path) -> None:
    root, planted = small_tree
    assert scrapy(tmp_path, "stats").returncode == 0  # creates the database
    doomed = [p.md5 for p in planted[5:8]]
    conn = sqlite3.connect(tmp_path / "data" / "emomo.db")
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON meme_vectors WHEN NEW.md5_hash IN "
        f"({', '.join(repr(m) for m in doomed)}) BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    conn.commit()
    conn.close()
    run = crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}")
    state = read_state(tmp_path)
    assert state.active_md5s() == {p.md5 for p in planted} - set(doomed)
    assert_consistent(state, COLLECTION)  # objects, rows and points of the doomed three are gone
    assert not {p.get("md5") for p in state.points[COLLECTION].values()} & set(doomed)
    assert run.stat("emomo/index/failed") == 3
    assert run.stat("emomo/ingest/failed") == 3
    assert run.stat("item_dropped_reasons_count/StageFailed") == 3
    errors = [line for line in run.log.splitlines() if " ERROR: index failed for " in line]
    assert len(errors) == 3 and all("database or disk is full" in e for e in errors)


def test_killed_crawl_run_again_ends_like_one_clean_run(small_tree: tuple[Path, list], tmp_path: Path) -> None:
    root, planted = small_tree
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean_dir.mkdir()
    killed_dir.mkdir()
    crawl(clean_dir, "chinesebqb", "-a", f"repo_path={root}")
    clean = read_state(clean_dir)
    assert len(clean.memes) == len(planted)

    def active() -> int:
        db = killed_dir / "data" / "emomo.db"
        if not db.exists():
            return 0
        try:
            conn = sqlite3.connect(db, timeout=1)
            try:
                return conn.execute("SELECT COUNT(*) FROM memes WHERE status = 'active'").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.OperationalError:  # tables not created yet
            return 0

    proc = start_crawl(killed_dir, "chinesebqb", "-a", f"repo_path={root}")
    try:
        assert wait_for(lambda: active() >= 12, timeout=240), "the crawl made no progress"
    finally:
        kill(proc)
    half = active()
    assert 12 <= half < len(planted), half

    run = crawl(killed_dir, "chinesebqb", "-a", f"repo_path={root}")
    assert run.stat("emomo/ingest/failed") == 0
    assert run.stat("emomo/ingest/processed") + run.stat("emomo/ingest/duplicate") == len(planted)
    assert run.stat("emomo/ingest/duplicate") >= half
    resumed = read_state(killed_dir)
    assert resumed.comparable() == clean.comparable()
    assert_consistent(resumed, COLLECTION)
