"""``scrapy serve`` benchmark: search latency and concurrency of the API, in process.
Prints its figures; asserts nothing.

    .venv/bin/python bench/index_scale.py --points 1000 --sizes 1000 --local-max 0 --workdir /tmp/serve1k
    .venv/bin/python bench/serve.py --workdir /tmp/serve1k

It opens the app on WORKDIR's config (the embedded defaults) on a loopback port, as
``scrapy serve`` does, then times ``/api/v1/search`` one request at a time (the first, which
warms the query embedder, reported apart) and answers 50 searches sent at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERIES = ["我太难了", "我先溜了", "你是懂表情包的", "好家伙", "打工人", "不想上班", "我裂开了", "笑死我了",
           "开心", "生气", "无语", "累了", "加油", "谢谢老板", "晚安", "早上好"]


async def main() -> None:
    import aiohttp
    from aiohttp import web

    from emomo.config import load_config
    from emomo.web.app import SearchService, build_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    os.chdir(args.workdir)
    service = SearchService(load_config(base_dir=args.workdir))
    runner = web.AppRunner(build_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/api/v1/search"
    rnd = random.Random(16)
    try:
        async with aiohttp.ClientSession() as session:
            stats = await (await session.get(f"http://127.0.0.1:{port}/api/v1/stats")).json()
            print(f"memes: {stats['memes']['active']} active; collections {stats['collections']}")
            started = time.perf_counter()
            async with session.get(url, params={"q": "我太难了", "top": "24"}) as response:
                await response.read()
            print(f"first request: {(time.perf_counter() - started) * 1000:.1f} ms")
            times = []
            for i in range(args.requests):
                q = f"{rnd.choice(QUERIES)}{i}"  # a new query each time: no cache of any kind helps
                started = time.perf_counter()
                async with session.get(url, params={"q": q, "top": "24"}) as response:
                    hits = await response.json()
                    assert response.status == 200 and len(hits) == 24, (response.status, hits)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            print(f"search, one at a time ({args.requests}): p50 {statistics.median(times):.1f} ms, "
                  f"p95 {times[int(len(times) * 0.95)]:.1f} ms, max {times[-1]:.1f} ms")

            async def one(i: int) -> int:
                async with session.get(url, params={"q": f"{QUERIES[i % len(QUERIES)]}!{i}", "top": "24"}) as r:
                    await r.read()
                    return r.status

            started = time.perf_counter()
            statuses = await asyncio.gather(*(one(i) for i in range(50)))
            wall = (time.perf_counter() - started) * 1000
            print(f"50 searches at once: {statuses.count(200)} answered 200 in {wall:.0f} ms")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
