"""``scrapy serve``: a search page and a JSON API over the configured index and database.

aiohttp serves it: it runs on the asyncio loop our backends already use (no second framework,
no thread per request), and it is the HTTP client Scrapy itself offers, so it adds no new
stack to the project. The database, the index and each embedding's query embedder are opened
once for the server's life; requests run concurrently on the loop.

Routes:

- ``GET /``: the page (``static/index.html``); the query lives in the URL (``/?q=…``).
- ``GET /api/v1/search?q=&top=&embedding=&category=&animated=&source=``: the hits of
  ``scrapy search --json`` (same keys) plus ``image_url``, what a browser can load.
- ``POST /api/v1/search/image`` (multipart, field ``image``, at most server.max_upload_mb):
  search by picture, as ``scrapy search --image``; ``match`` is ``picture`` for the meme it is.
- ``GET /api/v1/stats``: ``scrapy stats --json``.
- ``GET /api/v1/categories``: ``[{"category": C, "name": display name, "memes": N}, …]``, most
  memes first; ``category=`` takes either form.
- ``GET /thumbs/{key}``: a meme's thumbnail (WebP, first frame), made once and kept.
- ``GET /images/{key}``: the local object store's files (only keys inside it, never a path
  outside; with S3/R2 the image URLs point at the bucket instead).

Errors are JSON ``{"error": "…"}``: 400 for bad input (naming the parameter), 404, 503 when a
backend is down (the server keeps serving and answers again once it is back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from emomo import clients
from emomo.blocking import one_blas_thread
from emomo.categories import display_name
from emomo.config import EmomoConfig
from emomo.errors import ConfigError, backend_errors
from emomo.imaging import CONTENT_TYPES, thumbnail
from emomo.logmask import SecretMask
from emomo.picture_search import NotAPicture
from emomo.query import Searcher, UnknownCategory, counts
from emomo.repositories import MemeRepository
from emomo.repositories.vector_index import SearchFilter, VectorIndex
from emomo.storage import ObjectStore
from emomo.storage.local import LocalObjectStore

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 200
MAX_TOP = 100
DEFAULT_TOP = 24
#: how the page and its files are found in the installed package
STATIC = "emomo.web"
#: keys of the object store: a two-character folder and a content-addressed file name of one of
#: the formats we ingest (a file planted beside them, ``.html`` or ``.svg``, is never served)
_KEY = re.compile(rf"[0-9a-f]{{2}}/[0-9a-f]{{32}}\.(?:{'|'.join(CONTENT_TYPES)})")
#: what every response tells the browser: no sniffing a type, no framing, the page's own script only
#: (images may come from a bucket's URL, any origin)
GUARDS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: "
                               "http: data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "Referrer-Policy": "no-referrer",
}
#: an absolute file path in an error message (not a URL's path): a 503 body names no folder of the server
_PATH = re.compile(r"(?<![\w:/.])/(?:[^\s'\"/]+/)*[^\s'\"/]*")
_YES, _NO = {"yes", "true", "1"}, {"no", "false", "0"}


class BadRequest(ValueError):
    """Bad input from the client: a 400 naming the parameter."""


class SearchService:
    """What the server holds open for its life."""

    def __init__(self, config: EmomoConfig, default_embedding: str | None = None) -> None:
        self.config = config
        self.default_embedding = config.embedding(default_embedding).name
        self.repo: MemeRepository = clients.build_repository(config)
        self.index: VectorIndex = clients.build_index(config)
        self.store: ObjectStore = clients.build_store(config)
        self.searchers: dict[str, Searcher] = {}
        self.mask = SecretMask(config.secrets())

    async def open(self) -> None:
        one_blas_thread()  # search by picture measures it as the crawl does
        await self.index.open()
        await self.repo.open()
        await self.searcher(self.default_embedding)  # its embedder loaded before the first request

    async def close(self) -> None:
        for searcher in self.searchers.values():
            await searcher.close()
        await self.repo.close()
        await self.index.close()
        await self.store.close()

    async def searcher(self, name: str) -> Searcher:
        if name not in self.searchers:
            try:
                searcher = Searcher(self.config, name, self.repo, self.index)
            except ConfigError as exc:
                raise BadRequest(f"embedding={name}: {exc}") from None
            self.searchers[name] = await searcher.open()
        return self.searchers[name]

    def with_urls(self, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hits as the API gives them: the object's key replaced by what a browser loads."""
        for hit in hits:
            key = hit.pop("storage_key")
            hit["image_url"] = self.image_url(key) if key else ""
            hit["thumb_url"] = f"/thumbs/{key}" if key else ""
        return hits

    def image_url(self, key: str) -> str:
        """What a browser loads: the store's public URL, the server's own /images/ for a local
        store, or a presigned URL of a private bucket."""
        public = getattr(self.store, "public_url", "")
        if public:
            return self.store.url(key)
        if isinstance(self.store, LocalObjectStore):
            return f"/images/{key}"
        presign = getattr(self.store, "presigned_url", None)
        return presign(key) if presign is not None else self.store.url(key)


def _query(request: web.Request, needs_q: bool = True) -> tuple[str, int, str, SearchFilter]:
    q = request.query.get("q", "").strip()
    if not q and needs_q:
        raise BadRequest("q: give a query, e.g. /api/v1/search?q=我太难了")
    if len(q) > MAX_QUERY_CHARS:
        raise BadRequest(f"q: at most {MAX_QUERY_CHARS} characters (got {len(q)})")
    raw_top = request.query.get("top", "") or str(DEFAULT_TOP)
    try:
        top = int(raw_top)
    except ValueError:
        raise BadRequest(f"top={raw_top}: expected a whole number from 1 to {MAX_TOP}") from None
    if top < 1:
        raise BadRequest(f"top={raw_top}: expected a whole number from 1 to {MAX_TOP}")
    animated = request.query.get("animated", "").strip().lower()
    if animated and animated not in _YES | _NO:
        raise BadRequest(f"animated={animated}: expected yes or no")
    where = SearchFilter(category=request.query.get("category") or None,
                         source_type=request.query.get("source") or None,
                         is_animated=None if not animated else animated in _YES)
    return q, min(top, MAX_TOP), request.query.get("embedding", ""), where


async def search(request: web.Request) -> web.Response:
    service: SearchService = request.app[SERVICE]
    q, top, embedding, where = _query(request)
    searcher = await service.searcher(embedding or service.default_embedding)
    try:
        hits = await searcher.search(q, top, where, storage_key=True)
    except UnknownCategory as exc:
        raise BadRequest(f"category={where.category}: {exc}") from None
    return web.json_response(service.with_urls(hits), dumps=_dumps)


async def search_image(request: web.Request) -> web.Response:
    """``POST /api/v1/search/image`` (multipart, the picture in the field ``image``; ``top``,
    ``embedding``, ``category``, ``animated``, ``source`` as query parameters)."""
    service: SearchService = request.app[SERVICE]
    limit = service.config.server.max_upload_mb * 1024 * 1024
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("image: send the picture as multipart/form-data in the field 'image'")
    data = b""
    async for part in await request.multipart():
        if isinstance(part, BodyPartReader) and part.name == "image":
            data = await part.read()
            if len(data) > limit:
                raise BadRequest(f"image: over server.max_upload_mb={service.config.server.max_upload_mb}")
            break
    if not data:
        raise BadRequest("image: no picture in the field 'image'")
    _, top, embedding, where = _query(request, needs_q=False)
    searcher = await service.searcher(embedding or service.default_embedding)
    try:
        hits = await searcher.search_picture(data, top, where, storage_key=True)
    except NotAPicture as exc:
        raise BadRequest(f"image: {exc}") from None
    except UnknownCategory as exc:
        raise BadRequest(f"category={where.category}: {exc}") from None
    return web.json_response(service.with_urls(hits), dumps=_dumps)


async def stats(request: web.Request) -> web.Response:
    service: SearchService = request.app[SERVICE]
    return web.json_response(await counts(service.config, service.repo, service.index), dumps=_dumps)


async def categories(request: web.Request) -> web.Response:
    service: SearchService = request.app[SERVICE]
    found = await service.repo.categories()
    return web.json_response([{"category": c, "name": display_name(c), "memes": n} for c, n in found.items()],
                             dumps=_dumps)


async def image(request: web.Request) -> web.StreamResponse:
    service: SearchService = request.app[SERVICE]
    key = request.match_info["key"]
    store = service.store
    # Only what a key of the store looks like: no "..", no absolute path, no other file.
    if not isinstance(store, LocalObjectStore) or not _KEY.fullmatch(key):
        raise web.HTTPNotFound(text='{"error": "no such image"}', content_type="application/json")
    root = store.root.resolve()
    path = (root / key).resolve()
    if root not in path.parents or not path.is_file():
        raise web.HTTPNotFound(text='{"error": "no such image"}', content_type="application/json")
    ctype = CONTENT_TYPES[path.suffix[1:]]
    return web.FileResponse(path, headers={"Content-Type": ctype, "Cache-Control": "public, max-age=86400"})


async def thumb(request: web.Request) -> web.StreamResponse:
    """A meme's thumbnail for the grid (the first frame, WebP, at most server.thumb_px a side):
    made from the stored object on its first request, kept under server.thumb_dir, then served
    from there. A grid of 24 ChineseBQB GIFs (1-5 MB each) loads a few hundred kilobytes."""
    service: SearchService = request.app[SERVICE]
    key = request.match_info["key"]
    if not _KEY.fullmatch(key):
        raise web.HTTPNotFound(text='{"error": "no such image"}', content_type="application/json")
    config = service.config.server
    path = Path(config.thumb_dir) / f"{key.rsplit('.', 1)[0]}.webp"
    if not path.is_file():
        if not await service.store.exists(key):
            raise web.HTTPNotFound(text='{"error": "no such image"}', content_type="application/json")
        data = await service.store.get(key)
        small = await asyncio.to_thread(thumbnail, data, config.thumb_px)
        await asyncio.to_thread(_keep, path, small)
    return web.FileResponse(path, headers={"Content-Type": "image/webp", "Cache-Control": "public, max-age=86400"})


def _keep(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` whole or not at all (two first requests may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


async def page(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ("app.js", "app.css"):
        raise web.HTTPNotFound()
    ctype = "text/javascript" if name.endswith(".js") else "text/css"
    return web.Response(body=_static(name), content_type=ctype, charset="utf-8")


def _static(name: str) -> bytes:
    return resources.files(STATIC).joinpath("static", name).read_bytes()


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def public_message(message: str) -> str:
    """An error as a response may carry it: file paths of the server replaced."""
    return _PATH.sub("<path>", message)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    """aiohttp's own errors (an unknown route, a method not allowed) as JSON, like ours."""
    if exc.content_type == "application/json":
        return exc
    message = f"{exc.reason}: {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        message = f"{exc.reason}: {request.method} {request.path} (allowed: {', '.join(sorted(exc.allowed_methods))})"
    response = web.json_response({"error": message}, status=exc.status, dumps=_dumps)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error as JSON, never a traceback, a path or a secret in a response: a backend that
    fails is a 503 (the server answers again once it is back); anything else a 500, logged with
    its stack."""
    service: SearchService = request.app[SERVICE]
    try:
        return await handler(request)
    except BadRequest as exc:
        return web.json_response({"error": str(exc)}, status=400, dumps=_dumps)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except backend_errors() as exc:
        message = service.mask.mask(f"{type(exc).__name__}: {exc}")
        logger.warning("%s %s failed: %s", request.method, request.path_qs, message)
        return web.json_response({"error": f"a backend is unavailable: {public_message(message)}"}, status=503,
                                 dumps=_dumps)
    except Exception:
        logger.exception("%s %s failed", request.method, request.path_qs)
        return web.json_response({"error": "internal error (the server's log has the details)"}, status=500,
                                 dumps=_dumps)


SERVICE = web.AppKey("service", SearchService)


async def guards(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(GUARDS)


def build_app(service: SearchService) -> web.Application:
    # A body over the upload cap is refused by aiohttp before it is read whole (a 413).
    upload = service.config.server.max_upload_mb * 1024 * 1024
    app = web.Application(middlewares=[errors], client_max_size=upload + 64 * 1024)
    app.on_response_prepare.append(guards)
    app[SERVICE] = service
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/api/v1/search", search)
    app.router.add_post("/api/v1/search/image", search_image)
    app.router.add_get("/api/v1/stats", stats)
    app.router.add_get("/api/v1/categories", categories)
    app.router.add_get("/images/{key:.+}", image)
    app.router.add_get("/thumbs/{key:.+}", thumb)

    async def backends(_: web.Application) -> AsyncIterator[None]:
        # Opened for the server's life, and closed whatever happens: half-opened ones too.
        try:
            await service.open()
            yield
        finally:
            await service.close()

    app.cleanup_ctx.append(backends)
    return app

