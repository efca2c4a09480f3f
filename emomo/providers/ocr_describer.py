"""Local describer: the meme's own text (OCR) plus what its source says.

Most memes carry their punchline as text, so OCR of that text is the best
description a machine without a VLM can give. rapidocr-onnxruntime ships its
models; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from emomo.config import IngestConfig, VLMConfig
from emomo.errors import Interrupted
from emomo.imaging import first_frame_rgb
from emomo.providers import DescribeContext


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


class OCRDescriber:
    def __init__(self, config: VLMConfig, ingest: IngestConfig) -> None:
        self.model = f"local-ocr/{config.model}"
        self.min_score = ingest.ocr_min_score
        # One engine per core beats one engine using every core: small memes leave
        # onnxruntime's intra-op threads idle (3.6 vs 5.7 memes/s on 2 cores, bench/ingest.py).
        self.threads = ingest.ocr_threads or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="emomo-ocr")
        # One engine per thread: onnxruntime sessions are shared-safe, but
        # RapidOCR keeps per-call state on the object.
        self._local = threading.local()

    def _engine(self) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            from rapidocr_onnxruntime import RapidOCR

            engine = RapidOCR(intra_op_num_threads=1) if self.threads > 1 else RapidOCR()
            self._local.engine = engine
        return engine

    def read_text(self, image: bytes) -> str:
        """The text drawn on the image (first frame of an animation), top to bottom."""
        rgb = np.asarray(first_frame_rgb(image))
        result, _ = self._engine()(np.ascontiguousarray(rgb[:, :, ::-1]), det_limit_type="max")
        lines = [text.strip() for _box, text, score in (result or []) if float(score) >= self.min_score]
        return " ".join(line for line in lines if line)

    def _read_unless_stopping(self, image: bytes, context: DescribeContext) -> str:
        # Items queue here for an engine; once the crawl stops, those still waiting cost nothing.
        if context.should_stop():
            raise Interrupted(f"{context.source}: the crawl is stopping; not read")
        return self.read_text(image)

    async def describe(self, image: bytes, fmt: str, context: DescribeContext) -> str:
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(self._executor, self._read_unless_stopping, image, context)
        return compose_description(text, context)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
