"""A VLM behind an OpenAI-compatible chat-completions API (OpenRouter by default).

The model is VLM_MODEL, the base URL OPENAI_BASE_URL, the key OPENAI_API_KEY.
The image goes as a base64 data URL; animations (GIF, WebP) as their first
frame in PNG, which every vision model reads.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

from emomo.config import IngestConfig, VLMConfig
from emomo.errors import ConfigError, Interrupted
from emomo.imaging import CONTENT_TYPES, first_frame_rgb
from emomo.providers import DescribeContext
from emomo.providers.concurrency import AdaptiveLimit
from emomo.providers.errors import ProviderError, provider_error
from emomo.providers.openai_compat import STOPPING, async_client

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"

SYSTEM_PROMPT = (
    "你是中文表情包的描述专家，为表情包搜索引擎写检索用的描述。"
    "先原样写出图中的文字（没有文字就写“图中无文字”），"
    "再写表情传达的情绪、画面主体（人物、动物或卡通形象）和它的动作神态，"
    "最后点明它玩的梗、谐音或网络流行语，以及适合在聊天里什么时候发。"
    "只写一段话，80到150个汉字，不要分点，不要标题，不要换行，不要写“这张图片”之类的开场白。"
)

# Few-shot pairs (text only: the shape of the answer matters, not the pictures).
EXAMPLES = (
    ("示例：熊猫头表情，戴墨镜的熊猫头面无表情，下方配字“我太难了”。",
     "图中文字是“我太难了”。熊猫头戴着墨镜、面无表情，嘴角微微下垂，透着一股强撑的疲惫和无奈。"
     "画面主体是经典的熊猫头表情包形象。这句话出自网络流行语“我太难了”，用来自嘲生活和工作压力大，"
     "适合在抱怨加班、考试或者诸事不顺时发给朋友，语气夸张又带点幽默。"),
    ("示例：一只橘猫瞪大眼睛看着镜头，配字“你礼貌吗”。",
     "图中文字是“你礼貌吗”。一只橘猫瞪圆眼睛直勾勾盯着镜头，神情震惊又带点不满，像是被冒犯了。"
     "画面主体是橘猫的大头特写。“你礼貌吗”是网络流行语，用来吐槽对方说话做事不客气、没分寸，"
     "适合在朋友开过分的玩笑或者提出无理要求时回怼，语气调侃而不伤和气。"),
)


def data_url(image: bytes, fmt: str) -> str:
    """The image as a data URL; the first frame as PNG for formats a model may not read."""
    if fmt in ("gif", "webp"):
        buf = io.BytesIO()
        first_frame_rgb(image).save(buf, format="PNG")
        image, content_type = buf.getvalue(), "image/png"
    else:
        content_type = CONTENT_TYPES[fmt]
    return f"data:{content_type};base64,{base64.b64encode(image).decode('ascii')}"


class OpenAIDescriber:
    def __init__(self, config: VLMConfig, ingest: IngestConfig) -> None:
        if not config.model:
            raise ConfigError("vlm.model is empty: set VLM_MODEL (e.g. openai/gpt-4o-mini)")
        if not config.api_key.get_secret_value():
            raise ConfigError("vlm.api_key is empty: set the OPENAI_API_KEY environment variable")
        self.model = config.model
        self.base_url = config.base_url or DEFAULT_BASE_URL
        self.max_tokens = config.max_tokens
        self.temperature = config.temperature
        self.max_delay = ("vlm.retry_max_delay", config.retry_max_delay)
        self.retries = config.retries
        self._client = async_client(config.api_key.get_secret_value(), self.base_url, config.timeout,
                                    max_retries=config.retries, max_delay=config.retry_max_delay,
                                    connections=2 * config.max_in_flight)
        # Calls in flight: the API's rate limit, found by the crawl, and backpressure on it.
        self.limit = AdaptiveLimit(config.max_in_flight, adaptive=config.adaptive,
                                   initial=config.initial_in_flight)
        self.calls = 0

    def messages(self, url: str, context: DescribeContext) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
        for question, answer in EXAMPLES:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        hint = "请描述这张表情包。"
        if context.tags:
            hint += "来源给出的标签（仅供参考）：" + "、".join(context.tags)
        messages.append({"role": "user", "content": [
            {"type": "text", "text": hint},
            {"type": "image_url", "image_url": {"url": url}},
        ]})
        return messages

    async def _call(self, messages: list[dict[str, Any]]) -> str:
        self.calls += 1
        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=self.temperature)
        except Exception as exc:
            raise provider_error(exc, f"vlm {self.model} at {self.base_url}", "OPENAI_API_KEY",
                                 self.max_delay) from None
        text = (response.choices[0].message.content or "").strip() if response.choices else ""
        if not text:
            raise ProviderError(f"vlm {self.model}: empty answer")
        return " ".join(text.split())

    async def describe(self, image: bytes, fmt: str, context: DescribeContext) -> str:
        url = await asyncio.to_thread(data_url, image, fmt)
        messages = self.messages(url, context)

        async def attempt() -> str:
            if context.should_stop():
                raise Interrupted(f"{context.source}: the crawl is stopping; not sent")
            STOPPING.set(context.should_stop)  # this task's context: its retries stop with the crawl
            return await self._call(messages)
        return await self.limit.run(attempt, self.retries, context.should_stop)

    def admission(self, behind: float | None = None) -> int:
        """Items to let into the pipelines: enough to keep every VLM slot busy while the items
        described before them are stored, embedded and indexed (the crawl sizes that part from
        the call time once it knows it: emomo.ingest.sizing.admission_limit)."""
        return 2 * self.limit.level + 16

    async def close(self) -> None:
        await self._client.close()
