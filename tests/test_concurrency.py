"""Adaptive concurrency of API calls (issue 13): the limit's rule on its own, then
the real describer against a loopback API that refuses calls beyond its own limit, then a crawl
at the default config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, build_tree, meme_bytes
from servers import RateLimitedVLM, serve

from emomo.config import load_config
from emomo.providers import DescribeContext
from emomo.providers.concurrency import AdaptiveLimit
from emomo.providers.openai_vlm import OpenAIDescriber


async def rounds(limit: AdaptiveLimit, calls: int, seconds: float = 0.01, congested: bool = False) -> None:
    """``calls`` calls, always more waiting than the limit lets through, each taking ``seconds``."""
    async def one() -> None:
        async with limit.slot() as report:
            await asyncio.sleep(seconds)
            if congested:
                report.congested()
            else:
                report.success()
    await asyncio.gather(*(one() for _ in range(calls)))


def test_slow_start_doubles_each_round_up_to_the_maximum() -> None:
    changes: list[int] = []
    limit = AdaptiveLimit(100, initial=8, on_change=changes.append)
    asyncio.run(rounds(limit, 8 + 16 + 32 + 64 + 100 + 100))
    assert changes == [16, 32, 64, 100]
    assert (limit.level, limit.peak) == (100, 100)


def test_push_back_cuts_once_a_burst_then_grows_one_a_round() -> None:
    limit = AdaptiveLimit(128, initial=32)

    # Calls of 50 ms: a busy machine's jitter stays within the latency tolerance (with calls of
    # 10 ms, a late wake-up of 10 ms made the rule hold, as it should for a slower API).
    async def go() -> None:
        await rounds(limit, 40, seconds=0.05)            # one clean round with callers waiting: 64
        assert limit.level == 64
        for _ in range(10):                              # ten refusals in one burst: one cut
            limit.congested()
        assert (limit.level, limit.congestion_events) == (48, 10)
        await asyncio.sleep(0.3)
        limit.congested()                                # a later burst: another cut
        assert limit.level == 36
        await rounds(limit, 36 + 37 + 10, seconds=0.05)  # then one more a round, no doubling
        assert limit.level == 38
    asyncio.run(go())


def test_no_growth_without_demand_or_when_latency_does_not_hold() -> None:
    limit = AdaptiveLimit(64, initial=8)

    async def go() -> None:
        for _ in range(40):                              # one call at a time: the level is never binding
            async with limit.slot() as report:
                await asyncio.sleep(0.01)
                report.success()
        assert limit.level == 8
        await rounds(limit, 8 + 4, seconds=0.01)         # binding, as fast as ever: doubles
        assert limit.level == 16
        await rounds(limit, 16 * 4, seconds=0.2)         # binding, 20x slower: holds
        assert limit.level == 16
    asyncio.run(go())


def test_fixed_level_when_not_adaptive() -> None:
    limit = AdaptiveLimit(24, adaptive=False)
    limit.congested()
    assert (limit.level, limit.congestion_events) == (24, 1)


def describer(url: str, tmp_path: Path, **vlm: object) -> OpenAIDescriber:
    config = load_config(env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vlm"},
                         base_dir=tmp_path)
    return OpenAIDescriber(config.vlm.model_copy(update={"provider": "openai", **vlm}), config.ingest)


async def describe_many(d: OpenAIDescriber, n: int, image: bytes) -> list[str]:
    context = DescribeContext(source="test", category="", tags=[], should_stop=lambda: False)
    return await asyncio.gather(*(d.describe(image, "png", context) for _ in range(n)))


def test_the_describer_settles_below_the_api_limit_and_grows_when_it_is_lifted(tmp_path: Path, cjk_font: str) -> None:
    api = RateLimitedVLM(limit=12, delay=0.2)
    image = meme_bytes("好的", 1, "png")
    with serve(api.handler()) as url:
        d = describer(url, tmp_path)

        async def go() -> tuple[tuple[float, float], int, int]:
            samples: list[int] = []

            async def sample() -> None:
                await asyncio.sleep(2.0)  # past the slow start
                while True:
                    samples.append(d.limit.level)
                    await asyncio.sleep(0.05)
            sampler = asyncio.ensure_future(sample())
            try:
                first = await describe_many(d, 400, image)
                sampler.cancel()
                assert len(first) == 400 and all(text.startswith("图中文字是“好的”") for text in first)
                settled = (sum(level <= 12 for level in samples) / len(samples),
                           sum(level <= 13 for level in samples) / len(samples), sum(samples) / len(samples))
                refused = api.refused
                api.limit = 1000                           # the API's limit is lifted
                await describe_many(d, 400, image)
                return settled, refused, d.limit.level
            finally:
                await d.close()

        settled, refused, grown = asyncio.run(go())
    # Close to the API's limit on average, at or below it most of the time and rarely beyond its
    # probe (one above). On a busy machine the probe lasts longer: the calls at the API overlap
    # less than the limiter's level, so the refusal that ends it comes later (measured with both
    # cores loaded: 64-78% of the time at or below, 93-98% at most one above, a mean of 11.6-11.9).
    assert 0.8 * 12 <= settled[2] <= 1.1 * 12, settled
    assert settled[0] >= 0.5, settled
    assert settled[1] >= 0.85, settled
    assert refused <= 0.1 * 400, refused                 # found without hammering it
    assert api.refused == refused                        # nothing refused once lifted
    assert grown > 24, grown
    assert d.limit.peak == grown


def test_a_crawl_at_the_default_config_keeps_more_than_16_vlm_calls_in_flight(tmp_path: Path, cjk_font: str) -> None:
    root = tmp_path / "ChineseBQB"
    planted = build_tree(root, CAPTIONS[:120], CATEGORIES, seed=31)
    api = RateLimitedVLM(limit=1000, delay=0.5)
    with serve(api.handler()) as url:
        (tmp_path / "vlm.yaml").write_text("vlm:\n  provider: openai\n", encoding="utf-8")
        crawl = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings={"EMOMO_CONFIG": "vlm.yaml"},
                          env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vlm"})
    assert crawl.stat("emomo/ingest/processed") == len(planted)
    assert api.answered == len(planted) and api.refused == 0
    assert api.peak > 16, api.peak
    assert crawl.stat("emomo/describe/in_flight_max") > 16
    [summary] = crawl.lines("Ingest summary:")
    assert f"VLM calls in flight max {crawl.stat('emomo/describe/in_flight_max')}, final " in summary
    assert crawl.stat("emomo/ingest/items_per_second") > 0


@pytest.mark.parametrize("cap", ["6"])
def test_an_explicit_admission_cap_wins(tmp_path: Path, cjk_font: str, cap: str) -> None:
    root = tmp_path / "ChineseBQB"
    build_tree(root, CAPTIONS[:40], CATEGORIES, seed=32)
    api = RateLimitedVLM(limit=1000, delay=0.3)
    with serve(api.handler()) as url:
        (tmp_path / "vlm.yaml").write_text("vlm:\n  provider: openai\n", encoding="utf-8")
        run_crawl(tmp_path, "chinesebqb", repo_path=str(root),
                  settings={"EMOMO_CONFIG": "vlm.yaml", "EMOMO_MAX_ITEMS_IN_FLIGHT": cap},
                  env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vlm"})
    assert 1 <= api.peak <= int(cap)
