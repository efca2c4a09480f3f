"""Search by the words on a meme and by its meaning (issue 24): Qdrant's BM25 fused with the dense
vector in one query, every hit saying why it is there, and no claim of a match for nonsense."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import edge_shard, scrapy
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, Planted, build_tree

from emomo.config import QdrantConfig, load_config
from emomo.query import Searcher
from emomo.repositories.text_index import matches_text, query_words

COLLECTION = "emomo-e5-small"
OFF_TOPIC = ("xyzzy", "汽车保险理赔流程", "SELECT * FROM users", "量子色动力学", "北京到上海的高铁时刻表",
             "如何申请护照", "lorem ipsum dolor", "太平洋有多深", "股票期权怎么交税", "一元二次方程求根公式")


@pytest.mark.parametrize(("query", "text", "expected"), [
    ("我太难了", "图中文字：我太难了。标签：滑稽大佬", True),
    ("太难", "图中文字：我太难了", True),
    ("ＯＫ 好的", "图中文字：ok，好的收到", True),          # width and case folded, every word present
    ("好的 再见", "图中文字：好的收到", False),              # one word missing
    ("我太难了！", "图中文字：我太难了", True),              # punctuation is no word
    ("！！", "图中文字：我太难了", False),                    # nothing to match
])
def test_a_hit_matches_by_text_when_every_word_of_the_query_is_on_it(query: str, text: str, expected: bool) -> None:
    assert matches_text(query, {"vlm_description": text, "tags": []}) is expected
    assert matches_text(query, {"vlm_description": "", "tags": [text]}) is expected  # tags are text too


def test_query_words_fold_width_case_and_punctuation() -> None:
    assert query_words("  ＯＫ，Ｂｏｓｓ  打工人! ") == ["ok", "boss", "打工人"]


@pytest.mark.parametrize(("folder", "name"), [
    ("001Funny_滑稽大佬😏BQB", "滑稽大佬"), ("015Golden_Curator_Panda金馆长熊猫🐼BQB", "金馆长熊猫"),
    ("020TATAN🤷\u200d♂️BQB", "TATAN"), ("011Dog_狗🐶BQB", "狗"), ("搞笑", "搞笑"), ("熊猫头", "熊猫头"),
])
def test_a_category_is_shown_by_the_name_a_person_says(folder: str, name: str) -> None:
    from emomo.categories import display_name, resolve

    assert display_name(folder) == name
    assert resolve(name, [folder, "其他"]) == [folder] and resolve(folder, [folder]) == [folder]


Answers = list[list[dict[str, Any]]]


def asked(workdir: Path, ask: Callable[[Searcher], Awaitable[Answers]]) -> Answers:
    """What ``ask`` gets of a searcher on ``workdir``'s index, opened and closed around it."""
    async def go() -> Answers:
        searcher = await Searcher(load_config(env={}, base_dir=workdir)).open()
        try:
            return await ask(searcher)
        finally:
            await searcher.close()
    return asyncio.run(go())


def search(workdir: Path, queries: list[str], top: int) -> list[list[dict[str, Any]]]:
    async def ask(searcher: Searcher) -> list[list[dict[str, Any]]]:
        return [await searcher.search(q, top) for q in queries]
    return asked(workdir, ask)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory, cjk_font: str) -> tuple[Path, list[Planted]]:
    """48 memes in template series (one figure a category, a caption each), crawled."""
    workdir = tmp_path_factory.mktemp("search")
    planted = build_tree(workdir / "ChineseBQB", CAPTIONS[:48], CATEGORIES, seed=21)
    run_crawl(workdir, "chinesebqb", repo_path=str(workdir / "ChineseBQB"))
    return workdir, planted


def test_a_whole_caption_finds_its_meme_first_as_a_text_match(series: tuple[Path, list[Planted]]) -> None:
    workdir, planted = series
    answers = search(workdir, [p.caption for p in planted], 5)
    first = [(hits[0]["md5"], hits[0]["match"]) for hits in answers]
    right = sum(1 for p, got in zip(planted, first, strict=True) if got == (p.md5, "text"))
    assert right / len(planted) >= 0.98, [(p.caption, got) for p, got in zip(planted, first, strict=True)]
    for hits in answers:  # text matches first, then the rest, each labelled
        labels = [h["match"] for h in hits]
        assert labels == sorted(labels, key=lambda m: m != "text") and set(labels) <= {"text", "meaning"}


def test_a_piece_of_a_caption_finds_its_meme_in_the_top_five(series: tuple[Path, list[Planted]]) -> None:
    workdir, planted = series
    pieces = [p.caption[1:4] if len(p.caption) > 3 else p.caption for p in planted]
    answers = search(workdir, pieces, 5)
    found = sum(1 for p, hits in zip(planted, answers, strict=True)
                if any(h["md5"] == p.md5 and h["match"] == "text" for h in hits))
    assert found / len(planted) >= 0.95, [(piece, [h["description"] for h in hits])
                                          for piece, hits in zip(pieces, answers, strict=True)]


def test_off_topic_queries_match_no_text_and_the_cli_says_so(series: tuple[Path, list[Planted]]) -> None:
    workdir, _ = series
    answers = search(workdir, list(OFF_TOPIC), 5)
    without_text = sum(1 for hits in answers if all(h["match"] == "meaning" for h in hits))
    assert without_text >= 9, [[h["description"] for h in hits if h["match"] == "text"] for hits in answers]
    assert all(len(hits) == 5 for hits in answers)  # the nearest in meaning are still shown
    shown = scrapy(workdir, "search", "xyzzy", "--top", "3")
    assert shown.returncode == 0 and shown.stdout.splitlines()[0] == \
        "no meme has these words on it; the nearest in meaning:"


def test_a_collection_made_before_hybrid_search_gains_it_with_index_build(tmp_path: Path, cjk_font: str) -> None:
    import qdrant_edge as edge

    planted = build_tree(tmp_path / "ChineseBQB", CAPTIONS[60:72], CATEGORIES, seed=22)
    run_crawl(tmp_path, "chinesebqb", repo_path=str(tmp_path / "ChineseBQB"))
    # What an earlier version left: the same points in a shard without BM25 terms.
    folder = tmp_path / "data" / "qdrant" / COLLECTION
    with edge_shard(folder) as shard:
        records, _ = shard.scroll(edge.ScrollRequest(limit=100, with_payload=True, with_vector=True))
    shutil.rmtree(folder)
    old = edge.EdgeShard.create(str(folder), edge.EdgeConfig(vectors=edge.EdgeVectorParams(
        size=384, distance=edge.Distance.Cosine)))
    old.update(edge.UpdateOperation.upsert_points([edge.Point(r.id, r.vector[""], r.payload) for r in records]))
    old.flush()
    old.close()
    assert not json.loads((folder / "edge_config.json").read_text()).get("sparse_vectors")
    # It opens and is searched as it is (by meaning), and a crawl writes to it.
    assert search(tmp_path, [planted[0].caption], 3)[0][0]["md5"] == planted[0].md5
    built = scrapy(tmp_path, "index", "build", "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["text_added"] == 12
    assert json.loads((folder / "edge_config.json").read_text())["sparse_vectors"] == {"text": {"modifier": "idf"}}
    with edge_shard(folder) as shard:
        records, _ = shard.scroll(edge.ScrollRequest(limit=100, with_payload=True, with_vector=True))
    assert len(records) == 12 and all(len(r.vector["text"].indices) > 0 for r in records)
    answers = search(tmp_path, [p.caption for p in planted], 3)
    assert [(hits[0]["md5"], hits[0]["match"]) for hits in answers] == [(p.md5, "text") for p in planted]


def test_a_qdrant_server_collection_fuses_the_same_way(tmp_path: Path) -> None:
    """qdrant-client's local mode stands in for a server: the same client calls, the same query."""
    from emomo.repositories.qdrant_client_index import QdrantClientIndex
    from emomo.repositories.vector_index import point_id

    texts = ["图中文字：我太难了", "图中文字：打工人打工魂", "图中文字：摸鱼快乐", "图中文字：下班了吗"]
    vectors = [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

    async def go() -> tuple[bool, list[str], list[str]]:
        index = QdrantClientIndex(QdrantConfig(), local_path=str(tmp_path / "local"))
        await index.open()
        try:
            await index.ensure_collection("c", 3, "local")
            await index.upsert("c", [(point_id("c", str(i)), v, {"vlm_description": t, "tags": []})
                                     for i, (t, v) in enumerate(zip(texts, vectors, strict=True))])
            # the query's meaning points at 我太难了; its words at 打工人
            fused = await index.search("c", [1.0, 0.0, 0.0], 4, text="打工")
            dense = await index.search("c", [1.0, 0.0, 0.0], 4)
            return (await index.text_search("c"), [h.payload["vlm_description"] for h in fused],
                    [h.payload["vlm_description"] for h in dense])
        finally:
            await index.close()

    text_search, fused, dense = asyncio.run(go())
    assert text_search
    assert dense[:2] == texts[:2] and fused[0] == "图中文字：打工人打工魂"


def search_pictures(workdir: Path, pictures: list[bytes], top: int) -> list[list[dict[str, Any]]]:
    async def ask(searcher: Searcher) -> list[list[dict[str, Any]]]:
        return [await searcher.search_picture(data, top) for data in pictures]
    return asked(workdir, ask)


def test_a_copy_of_a_meme_finds_it_first_by_picture(series: tuple[Path, list[Planted]]) -> None:
    import random

    from memegen import COPY_KINDS, copy_of

    workdir, planted = series
    rnd = random.Random(5)
    cases = [(p, kind) for p in planted[:24] for kind in ("jpeg", "resize", "crop")] + \
            [(p, kind) for p in planted[24:30] for kind in COPY_KINDS]
    pictures = [copy_of((workdir / "ChineseBQB" / p.rel_path).read_bytes(), kind, rnd)[0] for p, kind in cases]
    answers = search_pictures(workdir, pictures, 5)
    first = sum(1 for (p, _), hits in zip(cases, answers, strict=True)
                if hits and (hits[0]["md5"], hits[0]["match"]) == (p.md5, "picture"))
    assert first / len(cases) >= 0.95, [(p.caption, kind, [(h["md5"] == p.md5, h["match"]) for h in hits[:2]])
                                        for (p, kind), hits in zip(cases, answers, strict=True)]
    # the very file, too
    [exact] = search_pictures(workdir, [(workdir / "ChineseBQB" / planted[0].rel_path).read_bytes()], 3)
    assert (exact[0]["md5"], exact[0]["match"]) == (planted[0].md5, "picture")
    assert exact[0]["sources"] == [f"chinesebqb:{planted[0].rel_path}"]  # where it is
    assert all("sources" not in h for h in exact[1:])


def test_another_caption_on_the_same_template_is_not_taken_for_the_meme(series: tuple[Path, list[Planted]]) -> None:
    from memegen import TEMPLATES, template_bytes

    workdir, planted = series
    # build_tree draws category i's series on template (seed + i) % 10: the fixture's seed is 21
    others = [template_bytes((21 + i) % (2 * len(TEMPLATES)), caption, "png")
              for i, caption in enumerate(("周一不想上班", "今晚吃火锅", "你说得对但是", "我先睡了"))]
    answers = search_pictures(workdir, others, 5)
    assert all(h["match"] != "picture" for hits in answers for h in hits), answers
    # what is read on it still finds memes with those words, or the nearest in meaning
    assert all(len(hits) == 5 for hits in answers)


def test_scrapy_search_image_on_the_command_line(series: tuple[Path, list[Planted]], tmp_path: Path) -> None:
    workdir, planted = series
    picture = tmp_path / "saved.jpg"
    from PIL import Image

    with Image.open(workdir / "ChineseBQB" / planted[3].rel_path) as im:
        im.convert("RGB").resize((200, 200)).save(picture, "JPEG", quality=70)
    run = scrapy(workdir, "search", "--image", str(picture), "--json", "--top", "3")
    assert run.returncode == 0, run.stderr
    hits = json.loads(run.stdout)
    assert (hits[0]["md5"], hits[0]["match"]) == (planted[3].md5, "picture")
    from emomo.picture_search import NotAPicture

    with pytest.raises(NotAPicture, match=r"^the picture cannot be searched by: not an image \(no known image "
                                          r"signature\)$"):
        search_pictures(workdir, [b"not a picture, a note"], 3)
