"""End to end on the embedded defaults: a ChineseBQB-shaped tree of 80 memes, with the oddities
of the real repository, crawled by ``scrapy crawl chinesebqb`` (the real command, once) into
SQLite, the embedded index and the filesystem store; then searched, counted, crawled again and
forced (in-process)."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Run, State, assert_consistent, crawl, read_state, scrapy
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, Planted, build_tree, meme_bytes

COLLECTION = "emomo-e5-small"

pytestmark = pytest.mark.slow  # the memes go through the real command

MEMES = 80  # enough for every category and oddity; each costs an OCR read of the suite's time


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height pixels of 1 bit: tiny file, huge image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * 64)  # only the first rows: the size check must come before decoding
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@dataclass
class Tree:
    root: Path
    planted: list[Planted]
    bad: dict[str, str]  # relative path -> what the error must say
    skipped: list[str]
    duplicate: str


def make_tree(root: Path) -> Tree:
    planted = build_tree(root, CAPTIONS[:MEMES], CATEGORIES)
    cat = CATEGORIES[0]
    # Files a real clone holds that are no memes: skipped without a word.
    skipped = {
        f"{cat}.zip": b"PK\x03\x04" + b"\x00" * 40,
        "README.md": b"# ChineseBQB",
        "build.js": b"console.log(1)",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "README/readme-image.png": meme_bytes("说明图片", 1, "png"),
        "cdn/cdn-image.gif": meme_bytes("加速图片", 2, "gif"),
        "chinesebqb-md/index.md": b"# md",
        f"{cat}/index.md": b"# index",
        f"{cat}/.DS_Store": b"\x00\x00",
        f"{cat}/.hidden-draft.png": meme_bytes("隐藏文件", 3, "png"),
        f"{CATEGORIES[1]}/新表情00099-下载中.gif.bdc-downloading": meme_bytes("下载一半", 4, "gif")[:300],
        f"{CATEGORIES[2]}/LICENSE": b"MIT License, no image here",
    }
    for rel, data in skipped.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    # Files that look like memes but are broken: reported, counted, skipped.
    png = (root / planted[0].rel_path).read_bytes()
    bad = {
        f"{CATEGORIES[3]}/空文件00001.jpg": (b"", "empty file"),
        f"{CATEGORIES[4]}/截断00002.png": (png[: len(png) // 2], "truncated"),
        f"{CATEGORIES[5]}/不是图片00003.gif": (b"<html>404 Not Found</html>", "not an image"),
        f"{CATEGORIES[6]}/炸弹00004.png": (png_bomb(20000, 20000), "decompression-bomb guard"),
    }
    for rel, (data, _) in bad.items():
        (root / rel).write_bytes(data)
    # The same image twice, under another category and name: one meme.
    duplicate = f"{CATEGORIES[7]}/重复00005-{planted[10].caption}.{planted[10].format}"
    shutil.copyfile(root / planted[10].rel_path, root / duplicate)
    return Tree(root, planted, {k: v[1] for k, v in bad.items()}, list(skipped), duplicate)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, cjk_font: str) -> Tree:
    return make_tree(tmp_path_factory.mktemp("bqb") / "ChineseBQB")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def first(tree: Tree, workdir: Path) -> tuple[Run, State]:
    run = crawl(workdir, "chinesebqb", "-a", f"repo_path={tree.root}")
    return run, read_state(workdir)


def test_one_active_meme_point_row_and_object_per_distinct_image(tree: Tree, first: tuple[Run, State]) -> None:
    run, state = first
    expected = {p.md5 for p in tree.planted}
    assert len(expected) == MEMES
    assert state.active_md5s() == expected
    assert len(state.memes) == MEMES
    assert len(state.vectors) == MEMES
    assert len(state.points[COLLECTION]) == MEMES
    assert len(state.objects) == MEMES
    assert_consistent(state, COLLECTION)
    by_md5 = {m["md5_hash"]: m for m in state.memes}
    for p in tree.planted:
        meme = by_md5[p.md5]
        assert meme["format"] == p.format  # from the bytes, whatever the file name says
        assert meme["storage_key"] == f"{p.md5[:2]}/{p.md5}.{p.format}"
        assert meme["is_animated"] == (p.format == "gif")
    assert run.stat("emomo/ingest/processed") == MEMES
    assert run.stat("emomo/ingest/duplicate") == 1
    assert "emomo/ingest/failed" not in run.stats
    assert run.stat("finish_reason") == "finished"
    assert run.stderr.rstrip().splitlines()[-1] == run.summary()  # the last line of the log


def test_source_ids_categories_and_tags_come_from_the_tree(tree: Tree, first: tuple[Run, State]) -> None:
    _, state = first
    by_md5 = {m["md5_hash"]: m for m in state.memes}
    for p in tree.planted:
        if p.md5 == tree.planted[10].md5:
            # the duplicate: whichever path was read first keeps the meme
            assert by_md5[p.md5]["source_id"] in (p.rel_path, tree.duplicate)
            continue
        meme = by_md5[p.md5]
        assert meme["source_type"] == "chinesebqb"
        assert meme["source_id"] == p.rel_path
        assert meme["category"] == p.rel_path.split("/")[0]
    tags = {m["source_id"]: json.loads(m["tags"]) for m in state.memes}
    assert tags["001Funny_滑稽大佬😏BQB/滑稽大佬00001-我太难了.png"] == ["滑稽大佬", "我太难了"]
    guid = next(p.rel_path for p in tree.planted if p.rel_path.startswith("015") and "{" in p.rel_path)
    assert tags[guid] == ["金馆长熊猫"]  # a GUID name says nothing; the category's Chinese name does
    # the Qdrant payload is the seed's
    point = next(iter(state.points[COLLECTION].values()))
    assert {"meme_id", "source_type", "category", "is_animated", "tags", "vlm_description",
            "storage_url"} <= set(point)


def test_bad_files_are_reported_and_counted_skipped_files_are_silent(tree: Tree, first: tuple[Run, State]) -> None:
    run, _ = first
    assert run.stat("emomo/read/invalid") == len(tree.bad) == 4
    assert run.stat("emomo/ingest/invalid") == 4
    warnings = [line for line in run.log.splitlines() if "WARNING" in line]
    for rel, reason in tree.bad.items():
        lines = [w for w in warnings if str(tree.root / rel) in w]
        assert len(lines) == 1, (rel, warnings)
        assert reason in lines[0]
    for rel in tree.skipped:
        assert Path(rel).name not in run.log, rel
    assert "4 invalid" in run.summary()
    assert run.stat("emomo/chinesebqb/yielded") == MEMES + 4 + 1


def test_search_finds_captions_in_the_top_5(tree: Tree, first: tuple[Run, State], workdir: Path) -> None:
    from emomo.config import load_config
    from emomo.query import Searcher

    config = load_config(env={}, base_dir=workdir)
    captions = [p for p in tree.planted if len(p.caption) >= 3]

    async def ranks() -> list[bool]:
        # One searcher (index, database, embedder opened once) for every query.
        searcher = await Searcher(config).open()
        try:
            return [p.md5 in [h["md5"] for h in await searcher.search(p.caption, top=5)] for p in captions]
        finally:
            await searcher.close()

    found = asyncio.run(ranks())
    recall = sum(found) / len(found)
    print(f"recall@5 over {len(found)} captions of 3+ characters: {recall:.3f}")
    assert recall >= 0.9


def test_scrapy_search_command_json(tree: Tree, first: tuple[Run, State], workdir: Path) -> None:
    target = next(p for p in tree.planted if p.caption == "打工人加油")
    run = scrapy(workdir, "search", "打工人加油", "--json", "--top", "3")
    assert run.returncode == 0, run.stderr
    hits = json.loads(run.stdout)
    assert len(hits) == 3
    assert set(hits[0]) == {"meme_id", "md5", "score", "match", "category", "category_name", "tags",
                            "description", "storage_url", "source_type", "source_id", "format", "is_animated"}
    assert hits[0]["match"] == "text" and [h["match"] for h in hits[1:]] == ["meaning", "meaning"]
    assert hits[0]["md5"] == target.md5
    assert hits[0]["source_id"] == target.rel_path
    assert "打工人加油" in hits[0]["description"]
    assert hits[0]["storage_url"].startswith("file://") and hits[0]["storage_url"].endswith(
        f"{target.md5}.{target.format}")
    assert Path(hits[0]["storage_url"][len("file://"):]).read_bytes() == (tree.root / target.rel_path).read_bytes()
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    text = scrapy(workdir, "search", "打工人加油", "--top", "1")
    assert text.returncode == 0
    assert "打工人加油" in text.stdout and target.rel_path in text.stdout


def test_scrapy_stats_command_json(first: tuple[Run, State], workdir: Path) -> None:
    run = scrapy(workdir, "stats", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "memes": {"active": MEMES, "pending": 0, "failed": 0, "retired": 0},
        "sources": {"total": MEMES + 1, "near_duplicate": 0},  # one image under two names
        "collections": {COLLECTION: {"points": MEMES, "vectors": MEMES}},
    }


def test_second_crawl_changes_nothing_and_counts_duplicates(tree: Tree, first: tuple[Run, State],
                                                            workdir: Path) -> None:
    _, before = first
    run = run_crawl(workdir, "chinesebqb", repo_path=str(tree.root))
    after = read_state(workdir)
    assert after.comparable() == before.comparable()
    assert [m["id"] for m in after.memes] == [m["id"] for m in before.memes]
    assert run.stat("emomo/ingest/duplicate") == MEMES + 1
    assert "emomo/ingest/processed" not in run.stats
    assert "emomo/describe/items" not in run.stats  # nothing was described again
    assert f"0 processed, 0 pending, {MEMES + 1} skipped as duplicate, 4 invalid, 0 failed" in run.summary()


def test_force_embeds_again_without_describing_or_storing_again(tree: Tree, first: tuple[Run, State],
                                                                workdir: Path) -> None:
    _, before = first
    run = run_crawl(workdir, "chinesebqb", repo_path=str(tree.root), force="1")
    after = read_state(workdir)
    # the duplicate path may be in flight with its twin (skipped) or come after it (embedded again)
    processed = run.stat("emomo/ingest/processed")
    assert processed + run.stats.get("emomo/ingest/duplicate", 0) == MEMES + 1
    assert processed >= MEMES
    assert run.stat("emomo/embed/ok") == processed
    assert run.stat("emomo/describe/reused") == processed
    assert "emomo/describe/described" not in run.stats
    assert "emomo/store/uploaded" not in run.stats
    assert after.comparable() == before.comparable()


def test_commands_run_below_the_project_folder_find_its_data(tmp_path: Path, cjk_font: str) -> None:
    """Data and relative paths resolve against the project's folder (its scrapy.cfg), as Scrapy
    finds its project: `cd samples && scrapy search …` answers from the project's data."""
    project = tmp_path / "project"
    (project / "samples").mkdir(parents=True)
    (project / "scrapy.cfg").write_text("[settings]\ndefault = emomo.settings\n", encoding="utf-8")
    planted = build_tree(project / "samples" / "ChineseBQB", CAPTIONS[:4])
    run_crawl(project, "chinesebqb", repo_path="samples/ChineseBQB")
    below = project / "samples"
    hits = json.loads(scrapy(below, "search", planted[0].caption, "--json").stdout)
    assert hits and hits[0]["md5"] == planted[0].md5
    assert not (below / "data").exists()  # nothing made under the folder the command ran in


def test_a_crawl_says_how_far_along_it_is_while_it_runs(tmp_path: Path, cjk_font: str) -> None:
    build_tree(tmp_path / "ChineseBQB", CAPTIONS[40:52])
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(tmp_path / "ChineseBQB"),
                    settings={"LOGSTATS_INTERVAL": 0.3, "EMOMO_MAX_ITEMS_IN_FLIGHT": 2})
    lines = run.lines("Progress: ", "INFO")
    assert lines, run.log[-2000:]
    assert " of 12 (" in lines[-1] and "items/s" in lines[-1] and "failed so far" in lines[-1]
    assert run.stat("emomo/chinesebqb/found") == 12
