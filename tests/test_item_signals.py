"""An item's end is Scrapy's: whichever way it leaves the pipelines (a user's pipeline drops it,
it fails outside our stages), what the runtime held for it is undone and let go."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from conftest import read_state
from crawling import Crawl, run_crawl
from memegen import CATEGORIES, copy_of, template_bytes


def crawl_within(seconds: float, *args: object, **kwargs: object) -> Crawl:
    """The crawl in a thread: one that never ends fails the test instead of hanging it."""
    done: list[Crawl] = []
    thread = threading.Thread(target=lambda: done.append(run_crawl(*args, **kwargs)), daemon=True)  # type: ignore[arg-type]
    thread.start()
    thread.join(seconds)
    assert done, f"the crawl did not end within {seconds} s: an item waits for one that left long ago"
    return done[0]


def test_an_item_a_users_pipeline_drops_is_undone_and_its_copy_does_not_wait_forever(
        tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    original = template_bytes(1, "拿捏了", "png")
    folder = root / CATEGORIES[0]
    folder.mkdir(parents=True)
    (folder / "丢弃-原图.png").write_bytes(original)  # read first, dropped after it is recorded
    (folder / "副本.jpg").write_bytes(copy_of(original, "jpeg", random.Random(1))[0])
    (folder / "别的.png").write_bytes(template_bytes(1, "格局打开", "png"))
    # The project's own pipelines, as a user adds them: the add-on puts ours around them.
    pipelines = {"user_pipelines.DelayCopiesPipeline": 50, "user_pipelines.DropMarkedPipeline": 650}
    run = crawl_within(120, tmp_path, "chinesebqb", repo_path=str(root),
                       settings={"ITEM_PIPELINES": pipelines, "EMOMO_MAX_ITEMS_IN_FLIGHT": 3})
    assert run.finish_reason == "finished"
    assert run.stat("emomo/ingest/dropped") == 1
    assert run.stat("item_dropped_reasons_count/DropMarked") == 1
    assert run.stat("emomo/near/waited") == 1  # the copy waited for the dropped original ...
    assert run.stat("emomo/ingest/processed") == 2  # ... then became the meme itself
    state = read_state(tmp_path)
    assert sorted(m["source_id"] for m in state.memes) == sorted([f"{CATEGORIES[0]}/副本.jpg",
                                                                   f"{CATEGORIES[0]}/别的.png"])
    assert len(state.objects) == 2  # the dropped item's object and row were undone
    assert "2 processed" in run.summary() and "1 dropped by another pipeline" in run.summary()


def test_a_project_of_its_own_gets_emomo_from_the_add_on_alone() -> None:
    """ADDONS = {"emomo.addon.EmomoAddon": 0} in a user's project: every EMOMO_* default (none
    falls back at its use: the frontier's busy mark once lapsed at once outside our settings),
    our pipelines around the project's, our extensions."""
    from scrapy.settings import Settings

    from emomo.addon import EXTENSIONS, PIPELINES, SETTINGS, EmomoAddon

    settings = Settings({"ITEM_PIPELINES": {"user_pipelines.DropMarkedPipeline": 650}})
    EmomoAddon().update_settings(settings)
    assert settings.getint("EMOMO_FRONTIER_BUSY_TTL") == 60 and settings.getbool("EMOMO_ENABLED")
    assert {name: settings[name] for name in SETTINGS} == SETTINGS
    pipelines = {getattr(k, "__module__", "") + "." + getattr(k, "__name__", "") if not isinstance(k, str) else k: v
                 for k, v in settings.getdict("ITEM_PIPELINES").items()}
    assert pipelines == {**PIPELINES, "user_pipelines.DropMarkedPipeline": 650}
    assert len(settings.getdict("EXTENSIONS")) == len(EXTENSIONS)
