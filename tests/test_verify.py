"""``scrapy verify`` finds what a lost backup, a crash or a hand-edit left, and ``--repair`` mends
what the kept data allows (issue 10); ``force=1`` puts a lost object back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

from conftest import edge_shard, read_state, scrapy
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, build_tree, meme_bytes
from qdrant_edge import Point, UpdateOperation

from emomo import verify as checks
from emomo.config import load_config
from emomo.query import search

COLLECTION = "emomo-e5-small"


def verify(workdir: Path, *args: str) -> tuple[int, dict]:
    """``scrapy verify --json`` as the command computes it, in-process."""
    repair = "--repair" in args
    report = asyncio.run(checks.verify(load_config(env={}, base_dir=workdir), None, repair))
    failed = report.left if repair else report.problems
    return (1 if failed else 0), report.as_json(repair)


def verify_command(workdir: Path, *args: str) -> tuple[int, dict]:
    run = scrapy(workdir, "verify", "--json", *args)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    return run.returncode, json.loads(run.stdout)


def test_verify_finds_every_kind_of_damage_and_repair_mends_what_it_can(tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[60:68], CATEGORIES, seed=41)
    run_crawl(tmp_path, "chinesebqb", repo_path=str(root))
    assert verify_command(tmp_path) == (0, {"collection": COLLECTION, "problems": 0, "by_kind": {}, "examples": []})

    state = read_state(tmp_path)
    memes = {m["md5_hash"]: m for m in state.memes}
    objects = tmp_path / "data" / "objects"
    a, b, c, d = (memes[p.md5] for p in planted[:4])
    (objects / a["storage_key"]).unlink()  # lost, but its source file still has it
    (objects / d["storage_key"]).unlink()  # lost, and its source file is gone too
    moved = tmp_path / "moved.bin"
    shutil.move(root / planted[3].rel_path, moved)
    stray = objects / "zz" / "stray.png"
    stray.parent.mkdir()
    stray.write_bytes(meme_bytes("孤儿", 1, "png"))
    os.utime(stray, (time.time() - 3600, time.time() - 3600))
    db = sqlite3.connect(tmp_path / "data" / "emomo.db")
    b_point = db.execute("SELECT qdrant_point_id FROM meme_vectors WHERE meme_id = ?", (b["id"],)).fetchone()[0]
    db.execute("DELETE FROM meme_vectors WHERE meme_id = ?", (c["id"],))  # c: active, no vector any more
    db.commit()
    db.close()
    with edge_shard(tmp_path / "data" / "qdrant" / COLLECTION) as shard:
        shard.update(UpdateOperation.delete_points([b_point]))
        shard.update(UpdateOperation.upsert_points([Point(str(uuid.uuid4()), [0.1] * 384, {"md5": "f" * 32})]))

    code, report = verify_command(tmp_path)
    assert code == 1
    assert report["by_kind"] == {"missing_object": 2, "missing_point": 1, "missing_vector": 1,
                                 "orphan_object": 1, "orphan_point": 2}
    assert report["problems"] == 7
    details = " | ".join(e["detail"] for e in report["examples"])
    assert a["storage_key"] in details and "zz/stray.png" in details and b_point in details

    code, repaired = verify(tmp_path, "--repair")
    assert code == 1  # d's bytes are nowhere
    assert repaired["repaired"] == 6
    [left] = repaired["left"]
    assert left["kind"] == "missing_object" and d["storage_key"] in left["detail"]
    assert "no source file holds" in left["why"] and "force=1" in left["why"]
    assert (objects / a["storage_key"]).read_bytes() == (root / planted[0].rel_path).read_bytes()
    assert not stray.exists()

    shutil.move(moved, root / planted[3].rel_path)
    assert verify(tmp_path, "--repair")[0] == 0
    assert verify(tmp_path)[1]["problems"] == 0
    config = load_config(env={}, base_dir=tmp_path)
    for p in (planted[1], planted[2]):  # re-embedded points are searchable again
        hits = asyncio.run(search(config, p.caption, top=3))
        assert p.md5 in [h["md5"] for h in hits]

    # A forced crawl puts a lost object back from the file it reads.
    (objects / a["storage_key"]).unlink()
    run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), force="1")
    assert run.stat("emomo/store/restored") == 1
    assert verify(tmp_path)[1]["problems"] == 0
