"""Local describer: the meme's own text (OCR) plus what its source says.

Most memes carry their punchline as text, so OCR of that text is the best
description a machine without a VLM can give. rapidocr-onnxruntime ships its
models; nothing is downloaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from emomo.config import IngestConfig, VLMConfig
from emomo.errors import Interrupted
from emomo.imaging import first_frame_rgb
from emomo.providers import DescribeContext, never
from emomo.providers.engines import engine_pool, engine_threads

#: items an engine needs in the other stages while it reads, before the crawl has measured it
DEFAULT_BEHIND_RATIO = 6
MAX_BEHIND_RATIO = 14


def compose_description(text: str, context: DescribeContext) -> str:
    """One line in the shape a VLM description has: the text first, then the context."""
    parts = []
    if text:
        parts.append(f"图中文字：{text}")
    labels = [t for t in dict.fromkeys(context.tags) if t and t != text]
    if labels:
        parts.append("标签：" + "、".join(labels))
    if not parts:
        parts.append(f"分类：{context.category}" if context.category else "表情包")
    return "。".join(parts)


#: the thinnest picture read for text (pixels), and its longest side to its shortest at most
MIN_TEXT_SIDE = 8
MAX_TEXT_ASPECT = 50


def _load() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    # det_limit_type="max" is read when the engine is built (rapidocr 1.4 ignores it per call):
    # a meme is detected at its own size (at most 960 px a side) instead of being upscaled to
    # 736 px on its short side, 4-5x less work with the same text read. One single-threaded
    # engine per thread beats one engine using every core: small memes leave onnxruntime's
    # threads spinning idle (a 240 px meme: 62 ms of CPU a read on two threads, 26 on one, for
    # 31 against 26 ms of wall time).
    return RapidOCR(det_limit_type="max", intra_op_num_threads=1)


class TextReader:
    """The text drawn on an image, read by OCR on the process's shared engines."""

    def __init__(self, ingest: IngestConfig, threads: int = 0) -> None:
        """``threads``: engines to read on (0: ``ingest.ocr_threads``, itself 0 for one per core)."""
        self.min_score = ingest.ocr_min_score
        self.threads = threads or engine_threads(ingest.ocr_threads)
        # One engine per thread (RapidOCR keeps per-call state on the object), loaded once per process.
        self._pool = engine_pool(self.threads)
        self._load = _load
        #: an engine's time a read, averaged (0 until the first)
        self.read_seconds = 0.0

    def read_text(self, engine: Any, image: bytes) -> str:
        """The text drawn on the image (first frame of an animation), top to bottom. A picture
        too thin to hold a line of text has none (RapidOCR cannot resize it and raises)."""
        frame = first_frame_rgb(image)
        if min(frame.size) < MIN_TEXT_SIDE or max(frame.size) > MAX_TEXT_ASPECT * min(frame.size):
            return ""
        rgb = np.asarray(frame)
        result, _ = engine(np.ascontiguousarray(rgb[:, :, ::-1]))
        lines = [text.strip() for _box, text, score in (result or []) if float(score) >= self.min_score]
        return " ".join(line for line in lines if line)

    def _read_unless_stopping(self, engine: Any, image: bytes, should_stop: Callable[[], bool], source: str) -> str:
        # Items queue here for an engine; once the crawl stops, those still waiting cost nothing.
        if should_stop():
            raise Interrupted(f"{source}: the crawl is stopping; not read")
        started = time.perf_counter()
        text = self.read_text(engine, image)
        took = time.perf_counter() - started
        # A moving average of an engine's time a read (not the wait for an engine): admission's measure.
        self.read_seconds = took if not self.read_seconds else 0.9 * self.read_seconds + 0.1 * took
        return text

    async def read(self, image: bytes, source: str = "", should_stop: Callable[[], bool] = never) -> str:
        return await self._pool.run("ocr", self._load, self._read_unless_stopping, image, should_stop, source)


class OCRDescriber:
    def __init__(self, config: VLMConfig, ingest: IngestConfig) -> None:
        self.model = f"local-ocr/{config.model}"
        self.reader = TextReader(ingest)
        self.threads = self.reader.threads

    async def describe(self, image: bytes, fmt: str, context: DescribeContext) -> str:
        # The near-duplicate check may have read the text already.
        if context.image_text is None:
            context.image_text = await self.reader.read(image, context.source, context.should_stop)
        return compose_description(context.image_text, context)

    def admission(self, behind: float | None = None) -> int:
        # Per engine: one item being read, one waiting, and as many in the other stages (read,
        # store, record, embed, index) as an engine reads in the time an item spends there
        # (Little's law), so the engines never wait for work. Fixed at 4 per engine, they idled
        # a quarter of the time once OCR took 50 ms an item. Capped: more would only wait longer
        # (128 items for 2 engines: a minute each) for no more throughput.
        read = self.reader.read_seconds
        others = min(MAX_BEHIND_RATIO, behind / read) if behind is not None and read else DEFAULT_BEHIND_RATIO
        return math.ceil(self.threads * (2 + others))

    async def close(self) -> None:
        return None  # the engines stay loaded for the process's next crawl
