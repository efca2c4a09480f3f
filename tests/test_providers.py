"""What a provider's failure means (classification), and the openai SDK's retries as our client
factory shapes them, against the loopback API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from servers import FakeAPI, Faults, fake_api

from emomo.providers.errors import ProviderError, provider_error, retry_after_seconds, status_error
from emomo.providers.openai_compat import STOPPING, async_client


@pytest.mark.parametrize(("status", "fatal", "item_fault"), [
    (401, True, False), (403, True, False), (400, False, True), (413, False, True), (415, False, True),
    (422, False, True), (429, False, False), (500, False, False), (503, False, False),
])
def test_status_classification(status: int, fatal: bool, item_fault: bool) -> None:
    err = status_error("vlm m at http://x", status, "detail " * 200, "OPENAI_API_KEY")
    assert (err.fatal, err.item_fault) == (fatal, item_fault)
    if fatal:
        assert str(err) == f"vlm m at http://x: the API key was refused (HTTP {status}); check OPENAI_API_KEY"
    else:
        assert len(str(err)) < 400  # an upstream body is cut, whatever its length


def test_retry_after_in_seconds_milliseconds_or_a_date() -> None:
    assert retry_after_seconds({"retry-after": "12"}) == 12
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 85 <= (retry_after_seconds({"retry-after": when}) or 0) <= 91
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def chat(url: str, key: str, *, retries: int, max_delay: float) -> tuple[str | None, ProviderError | None]:
    async def run() -> tuple[str | None, ProviderError | None]:
        client = async_client(key, url, timeout=10, max_retries=retries, max_delay=max_delay)
        image = "data:image/png;base64,iVBORw0KGgo="
        try:
            response = await client.chat.completions.create(model="m", messages=[
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "t"},
                                             {"type": "image_url", "image_url": {"url": image}}]}])
            return response.choices[0].message.content, None
        except Exception as exc:
            return None, provider_error(exc, "vlm m", "OPENAI_API_KEY", ("vlm.retry_max_delay", max_delay))
        finally:
            await client.close()
    return asyncio.run(run())


def test_the_sdk_retries_a_short_retry_after_and_parks_a_long_one() -> None:
    api = FakeAPI(api_key="k", vlm_faults=Faults(throttle_first=True, retry_after="0.1"))
    api.ocr = lambda image: "文字"  # type: ignore[method-assign]  # the image is a stub: no OCR needed
    with fake_api(api) as url:
        text, err = chat(url, "k", retries=2, max_delay=30)
        assert err is None and text and "文字" in text
        assert api.calls["chat"] == 2  # the 429, then the retry after 0.1 s

        api.vlm_faults = Faults(throttle_first=True, retry_after="3600")
        api.seen.clear()
        text, err = chat(url, "k", retries=2, max_delay=30)
        assert text is None and err is not None and not err.item_fault and not err.fatal
        assert "Retry-After of 3600 s is over vlm.retry_max_delay=30" in str(err)
        assert api.calls["chat"] == 3  # no retry for an hour's wait


def test_no_retry_once_the_crawl_is_stopping() -> None:
    api = FakeAPI(api_key="k", vlm_faults=Faults(fail=lambda md5: 503))
    with fake_api(api) as url:
        STOPPING.set(lambda: True)
        try:
            _, err = chat(url, "k", retries=3, max_delay=30)
        finally:
            STOPPING.set(lambda: False)
    assert err is not None and "HTTP 503" in str(err)
    assert api.calls["chat"] == 1


def test_the_seeds_embeddings_run_by_name_with_only_their_key_and_url(tmp_path: Path, cjk_font: str) -> None:
    """`JINA_API_KEY=… scrapy crawl chinesebqb -a embedding=jina` and the same for qwen3 (ModelScope,
    OpenAI's wire format): no YAML written; each writes its own collection at its own dimensions."""
    from conftest import read_points, read_state
    from crawling import run_crawl
    from memegen import CAPTIONS, build_tree
    from servers import FakeAPI, fake_api

    root = tmp_path / "ChineseBQB"
    build_tree(root, CAPTIONS[:3])
    for name, key_env, url_env, dims, collection, model in (
            ("jina", "JINA_API_KEY", "JINA_BASE_URL", 1024, "emomo", "jina-embeddings-v3"),
            ("qwen3", "MODELSCOPE_API_KEY", "MODELSCOPE_BASE_URL", 4096, "emomo-qwen3-embedding-8b",
             "Qwen/Qwen3-Embedding-8B")):
        api = FakeAPI(api_key=f"{name}-key", embedding_dimensions=dims)
        with fake_api(api) as url:
            run = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), embedding=name,
                            env={key_env: f"{name}-key", url_env: url})
        assert run.stat("emomo/ingest/processed") == 3, name
        assert len(read_points(tmp_path / "data" / "qdrant")[collection]) == 3
        assert {v["embedding_model"] for v in read_state(tmp_path).vectors if v["collection"] == collection} == {model}
        assert {r["model"] for r in api.requests if r["path"] == "embeddings"} == {model}
        assert {r["dimensions"] for r in api.requests if r["path"] == "embeddings"} <= {dims, None}
