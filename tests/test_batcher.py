"""The micro-batcher alone: pieces of many items in one call, each item its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from emomo.ingest.batcher import MicroBatcher
from emomo.providers.errors import ProviderError


class Service:
    def __init__(self, fail: Exception | None = None, bad: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.bad = bad

    async def __call__(self, pieces: list[str]) -> list[str]:
        self.calls.append(list(pieces))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if self.bad in pieces:
            raise ProviderError(f"HTTP 400: {self.bad!r} refused", item_fault=True)
        return [p.upper() for p in pieces]


def item_fault(exc: Exception) -> bool:
    return isinstance(exc, ProviderError) and exc.item_fault


async def submit_all(batcher: MicroBatcher[str, str], pieces: list[str]) -> list[object]:
    return await asyncio.gather(*(batcher.submit(p) for p in pieces), return_exceptions=True)


def test_pieces_gather_into_batches_of_at_most_max_size() -> None:
    service = Service()
    sizes: list[int] = []
    batcher = MicroBatcher(service, max_size=4, max_wait=0.01, name="t", on_batch=lambda _, n: sizes.append(n))
    results = asyncio.run(submit_all(batcher, [f"p{i}" for i in range(10)]))
    assert results == [f"P{i}" for i in range(10)]
    assert sizes == [4, 4, 2] and len(service.calls) == 3


def test_a_service_outage_fails_every_piece_without_more_calls() -> None:
    service = Service(fail=ProviderError("HTTP 503: unavailable"))
    batcher = MicroBatcher(service, max_size=32, max_wait=0.01, name="t", isolate=item_fault)
    results = asyncio.run(submit_all(batcher, [f"p{i}" for i in range(32)]))
    assert len(service.calls) == 1  # a 503 on 32 texts is one call, not 33
    assert all(isinstance(r, ProviderError) and "503" in str(r) for r in results)


def test_an_item_fault_is_split_until_only_the_bad_item_fails() -> None:
    service = Service(bad="p3")
    batcher = MicroBatcher(service, max_size=8, max_wait=0.01, name="t", isolate=item_fault)
    results = asyncio.run(submit_all(batcher, [f"p{i}" for i in range(8)]))
    assert [r for r in results if isinstance(r, Exception)] == [results[3]]
    assert [r for i, r in enumerate(results) if i != 3] == [f"P{i}" for i in range(8) if i != 3]
    assert len(service.calls) == 1 + 8  # the batch, then each piece alone


def test_drain_sends_what_waits_and_waits_for_what_is_in_flight() -> None:
    service = Service()
    batcher = MicroBatcher(service, max_size=100, max_wait=60, name="t")

    async def run() -> list[object]:
        pending = [asyncio.ensure_future(batcher.submit(p)) for p in ("a", "b")]
        await asyncio.sleep(0)
        await batcher.drain()  # does not wait the minute
        return [t.result() for t in pending]

    assert asyncio.run(asyncio.wait_for(run(), 5)) == ["A", "B"]


@pytest.mark.parametrize("answer", [["ONE"], ["A", "B", "C"]])
def test_a_wrong_number_of_results_fails_the_batch(answer: list[str]) -> None:
    async def call(pieces: list[str]) -> list[str]:
        return answer

    batcher = MicroBatcher(call, max_size=2, max_wait=0.01, name="t", isolate=lambda exc: False)
    results = asyncio.run(submit_all(batcher, ["a", "b"]))
    assert all(isinstance(r, RuntimeError) and "results for 2 inputs" in str(r) for r in results)


def test_admission_waits_for_room_and_for_the_last_item() -> None:
    from emomo.ingest.admission import Admission

    in_flight = [3]
    stopping = [False]
    limit = [3]
    admission = Admission(lambda: limit[0], lambda: in_flight[0])

    async def run() -> list[str]:
        events: list[str] = []

        async def finish_one() -> None:
            await asyncio.sleep(0.1)
            in_flight[0] -= 1
            admission.item_done()

        asyncio.ensure_future(finish_one())
        assert await admission.wait(lambda: stopping[0])  # room once one of three is done
        events.append(f"admitted at {in_flight[0]}")
        for _ in range(2):
            asyncio.ensure_future(finish_one())
        assert await admission.drained(lambda: stopping[0])
        events.append(f"drained at {in_flight[0]}")
        in_flight[0], limit[0] = 4, 6  # the limit rises (a VLM level found higher): room again
        assert await admission.wait(lambda: stopping[0])
        in_flight[0] = 6
        stopping[0] = True
        assert not await admission.wait(lambda: stopping[0])  # a stopping crawl admits nothing
        return events

    assert asyncio.run(asyncio.wait_for(run(), 5)) == ["admitted at 2", "drained at 0"]


def test_the_progress_line_says_how_far_along_the_source_and_what_is_left() -> None:
    from emomo.progress import progress_line

    stats = {"emomo/ingest/processed": 1200, "emomo/ingest/duplicate": 30, "emomo/ingest/pending": 3,
             "emomo/ingest/failed": 1, "emomo/ingest/first_start": 1000.0, "emomo/chinesebqb/found": 4400}
    assert progress_line(stats, "chinesebqb", 1100.0) == (
        "Progress: 1,234 of 4,400 (28%), 12.3 items/s, about 4 min 16 s left; 3 pending, 1 failed so far")
    del stats["emomo/chinesebqb/found"]
    assert progress_line(stats, "fabiaoqing", 1100.0) == (
        "Progress: 1,234 done, 12.3 items/s; 3 pending, 1 failed so far")
    assert progress_line({}, "chinesebqb", 1100.0) is None


def test_admission_keeps_the_vlm_busy_by_littles_law_within_bounds() -> None:
    from emomo.ingest.sizing import FALLBACK_ITEMS_IN_FLIGHT, MAX_ADMISSION, admission_limit
    from emomo.providers.concurrency import AdaptiveLimit

    limit = AdaptiveLimit(128, initial=8)
    limit._recent = 0.5  # calls of half a second lately
    # 2 s an item outside the VLM: 4 places a slot behind it, and a slot's worth waiting, plus 16
    assert admission_limit(2.5, 0.5, limit, None) == 8 * (4 + 1) + 16
    assert admission_limit(60.0, 0.5, limit, None) == 8 * (8 + 1) + 16  # at most 8 a slot
    limit.level = 200
    assert admission_limit(60.0, 0.5, limit, None) == MAX_ADMISSION
    # before anything is measured: the describer's own sizing, else the fallback
    assert admission_limit(None, 0.0, limit, lambda behind: 12 if behind is None else 0) == 12
    assert admission_limit(None, 0.0, None, None) == FALLBACK_ITEMS_IN_FLIGHT
