"""Adaptive concurrency for paid APIs: how many calls to keep in flight, found rather than guessed.

What Scrapy's AutoThrottle does for a website's download delay, this does for an API's calls
in flight, with the rule TCP uses for its window (additive increase, multiplicative decrease):

- it starts at ``initial`` and doubles each round while every call succeeds ("slow start");
- after the first sign of congestion it grows by one per round, and only while the calls
  answer as fast as the fastest it has seen (within ``latency_tolerance``);
- a 429, a Retry-After or a 5xx cuts it to ``decrease`` of itself, at most once per round
  trip (the calls already sent when the API started refusing are the same event);
- back near the level that was refused, it waits ``probe_rounds`` clean rounds before trying
  it again: it settles just below the API's limit; above that level (the limit went up) it
  grows by a quarter a round;
- it never goes above ``maximum`` (``vlm.max_in_flight``) nor below 1.

A round is as many successful calls as the level allows, so the level moves at the pace the
API answers. ``adaptive=False`` keeps ``maximum`` as a fixed level.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from emomo.providers import never
from emomo.providers.errors import ProviderError

T = TypeVar("T")

#: the report of the call made in this context, for the HTTP client's response hook
#: (emomo.providers.openai_compat): it tells the limit of every push-back, retried ones included
CALL: contextvars.ContextVar[CallReport | None] = contextvars.ContextVar("emomo_call", default=None)


class AdaptiveLimit:
    def __init__(self, maximum: int, *, adaptive: bool = True, initial: int = 8, decrease: float = 0.75,
                 latency_tolerance: float = 2.0, probe_rounds: int = 3,
                 on_change: Callable[[int], None] | None = None) -> None:
        self.maximum = max(1, maximum)
        self.adaptive = adaptive
        self.level = min(self.maximum, max(1, initial)) if adaptive else self.maximum
        self.peak = self.level
        self.decrease = decrease
        self.latency_tolerance = latency_tolerance
        self.probe_rounds = probe_rounds
        self._ceiling: int | None = None  # the level at the last push-back
        self._clean_rounds = 0
        self.on_change = on_change
        self.in_flight = 0
        self.congestion_events = 0
        self._slow_start = True
        self._round_successes = 0
        self._limited = False  # a caller waited for a slot this round: more would have been used
        self._fastest: float | None = None
        self._recent: float | None = None
        self._last_cut = float("-inf")
        self._room = asyncio.Event()
        self._room.set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[CallReport]:
        """Hold one of the slots for a call; the report says how the call went."""
        while self.in_flight >= self.level:
            self._limited = True
            self._room.clear()
            await self._room.wait()
        self.in_flight += 1
        report = CallReport(self)
        try:
            yield report
        finally:
            self.in_flight -= 1
            self._room.set()
            report.done()

    async def run(self, call: Callable[[], Awaitable[T]], retries: int,
                  should_stop: Callable[[], bool] = never) -> T:
        """``call()`` in a slot. Rate limited (a 429), the call gives its slot back while it
        waits out the Retry-After, then tries again, up to ``retries`` times: a waiting call
        holds no slot, so the level counts the calls the API is serving."""
        attempt = 0
        while True:
            async with self.slot() as report:
                CALL.set(report)
                try:
                    result = await call()
                except ProviderError as exc:
                    if exc.wait is None or attempt >= retries or should_stop():
                        raise
                    wait, pushed_back = exc.wait, exc
                else:
                    report.success()
                    return result
            attempt += 1
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                if should_stop():
                    raise pushed_back
                await asyncio.sleep(min(left, 0.5))

    @property
    def call_seconds(self) -> float | None:
        """How long a call takes lately (a moving average of successful calls)."""
        return self._recent

    # --- what calls report -----------------------------------------------------------------

    def congested(self) -> None:
        """The API pushed back (429, Retry-After, 5xx): fewer calls at once."""
        self.congestion_events += 1
        if not self.adaptive:
            return
        now = time.monotonic()
        if now - self._last_cut < (self._recent or 1.0):
            return  # the same burst: the calls in flight were sent before the last cut
        self._last_cut = now
        self._ceiling = self.level
        self._clean_rounds = 0
        self._slow_start = False
        self._round_successes = 0
        self._set(max(1, int(self.level * self.decrease)))

    def succeeded(self, seconds: float) -> None:
        self._recent = seconds if self._recent is None else 0.8 * self._recent + 0.2 * seconds
        self._fastest = seconds if self._fastest is None else min(self._fastest, seconds)
        if not self.adaptive:
            return
        self._round_successes += 1
        if self._round_successes < self.level:
            return
        self._round_successes = 0
        limited, self._limited = self._limited, False
        if not limited or self.level >= self.maximum:
            return  # no caller waited: a higher level would not be used, and nothing is learnt
        if self._recent > self.latency_tolerance * self._fastest:
            return  # the API slows down under this load: hold
        if self._slow_start:
            self._set(min(self.maximum, self.level * 2))
            return
        step = 1
        if self._ceiling is not None and self.level + 1 >= self._ceiling:
            if self.level <= self._ceiling:
                self._clean_rounds += 1
                if self._clean_rounds < self.probe_rounds:
                    return  # it was refused there: try again only after a few clean rounds
                self._clean_rounds = 0
            else:
                step = max(1, self.level // 4)  # clean above the refused level: the limit went up
        self._set(min(self.maximum, self.level + step))

    def _set(self, level: int) -> None:
        if level == self.level:
            return
        self.level = level
        self.peak = max(self.peak, level)
        self._room.set()
        if self.on_change is not None:
            self.on_change(level)


class CallReport:
    """One call's outcome, told to its limit when the slot is given back."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.started = time.monotonic()
        self.pushed_back = False
        self.ok = False

    def congested(self) -> None:
        if not self.pushed_back:
            self.pushed_back = True
            self.limit.congested()

    def success(self) -> None:
        self.ok = True

    def done(self) -> None:
        # A call that was pushed back and then retried took the API's wait, not its own time.
        if self.ok and not self.pushed_back:
            self.limit.succeeded(time.monotonic() - self.started)
