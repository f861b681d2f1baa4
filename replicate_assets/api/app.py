"""The search API: `GET /search?text=...` or `?image=URL`, `GET /products/{id}/similar`, `GET /health`.

Answers are JSON. A bad query is a 400 that says what to fix; an unknown product a 404. A text or image query
that is not in the cache costs one Replicate prediction: at most `queries_per_minute` of those a minute, beyond
which the answer is a 429 that says so (cached queries are always answered). Work runs in a thread pool, at most
`max_concurrent` at once (503 when busy) and `timeout` seconds each (504). When an API key is set, every route but
/health needs it (`X-API-Key: KEY` or `Authorization: Bearer KEY`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from replicate_assets.replicate import ReplicateError
from replicate_assets.replicate.ratelimit import TokenBucket
from replicate_assets.similarity.search import Answer, Searcher
from replicate_assets.urls import resolve_image_url, shown

MAX_LIMIT = 100
MAX_TEXT = 300
REFRESH_SECONDS = 60.0


class BadQuery(ValueError):
    """A query the API cannot answer as asked: the message says what to change."""


def _number(request: Request, name: str, kind: type, low: float, high: float, default: Any) -> Any:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadQuery(f"{name}={raw!r} is not a number") from None
    if not (low <= value <= high) or (isinstance(value, float) and not math.isfinite(value)):
        raise BadQuery(f"{name} must be between {low:g} and {high:g}")
    return value


def _answer(searcher: Searcher, answer: Answer, query: dict[str, Any]) -> dict[str, Any]:
    index = searcher.index
    return {
        "query": query,
        "results": [
            {
                "product_id": h.product_id,
                "name": h.name,
                "score": h.score,
                "image_url": shown(h.image_url) if h.image_url else None,
            }
            for h in answer.hits
        ],
        "cached": answer.cached,
        "took_ms": round(answer.milliseconds, 2),
        "model": searcher.model,
        "index": index.kind if index is not None else None,
    }


def create_app(
    searcher: Searcher,
    *,
    api_key: str | None = None,
    queries_per_minute: int = 30,
    max_concurrent: int = 8,
    timeout: float = 20.0,
) -> Starlette:
    """The API over `searcher` (its index is loaded at start, and again every minute in the background)."""
    slots = asyncio.Semaphore(max_concurrent)
    predictions = TokenBucket(queries_per_minute / 60.0, queries_per_minute)
    refreshed = threading.Event()

    def refresh_forever() -> None:
        while not refreshed.wait(REFRESH_SECONDS):
            try:
                searcher.refresh()
            except Exception:  # a database hiccup: the index in memory keeps serving
                continue

    async def guarded(request: Request, work) -> JSONResponse:
        if api_key and request.url.path != "/health":
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return JSONResponse({"detail": "a valid API key is needed: send it as X-API-Key"}, 401)
        try:
            await asyncio.wait_for(slots.acquire(), timeout=1.0)
        except TimeoutError:
            return JSONResponse({"detail": "the search service is busy: try again in a moment"}, 503)
        try:
            return JSONResponse(await asyncio.wait_for(run_in_threadpool(work), timeout=timeout))
        except BadQuery as err:
            return JSONResponse({"detail": str(err)}, 400)
        except LookupError as err:
            return JSONResponse({"detail": str(err).strip("'\"")}, 404)
        except Throttled as err:
            headers = {"Retry-After": str(err.seconds)}
            return JSONResponse({"detail": str(err), "retry_after": err.seconds}, 429, headers=headers)
        except ReplicateError as err:
            return JSONResponse({"detail": f"Replicate could not embed the query: {err}"}, 502)
        except TimeoutError:
            return JSONResponse({"detail": f"the search took longer than {timeout:g} s"}, 504)
        finally:
            slots.release()

    async def health(request: Request) -> JSONResponse:
        index = searcher.index
        ready = index is not None
        body = {"status": "ok" if ready else "loading", "model": searcher.model}
        if ready:
            body.update(index=index.kind, images=len(index), products=len(searcher.live))
        return JSONResponse(body, 200 if ready else 503)

    def admit_paid_query() -> None:
        """A query that is not cached costs a prediction: within the cap, or Throttled."""
        wait = predictions.take()
        if wait:
            raise Throttled(queries_per_minute, math.ceil(wait))

    async def search(request: Request) -> JSONResponse:
        def work() -> dict[str, Any]:
            text, image = request.query_params.get("text"), request.query_params.get("image")
            limit = _number(request, "limit", int, 1, MAX_LIMIT, 10)
            min_score = _number(request, "min_score", float, -1.0, 1.0, None)
            if (text is None) == (image is None):
                raise BadQuery("ask with exactly one of text=... or image=URL")
            if text is not None:
                kind, value = "text", " ".join(text.split())
                if not value or len(value) > MAX_TEXT:
                    raise BadQuery(f"text must hold 1 to {MAX_TEXT} characters")
            else:
                url, why = resolve_image_url(image, None)
                if url is None:
                    raise BadQuery(f"image must be an http(s) URL the model can fetch ({why})")
                kind, value = "image", url
            answer = searcher.query(kind, value, limit, min_score, admit=admit_paid_query)
            return _answer(searcher, answer, {kind: value if kind == "text" else shown(value), "limit": limit})

        return await guarded(request, work)

    async def similar(request: Request) -> JSONResponse:
        def work() -> dict[str, Any]:
            product = int(request.path_params["product_id"])
            limit = _number(request, "limit", int, 1, MAX_LIMIT, 10)
            min_score = _number(request, "min_score", float, -1.0, 1.0, None)
            answer = searcher.like_product(product, limit, min_score)
            return _answer(searcher, answer, {"like_product": product, "limit": limit})

        return await guarded(request, work)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(searcher.refresh)
        threading.Thread(target=refresh_forever, name="index-refresh", daemon=True).start()
        yield
        refreshed.set()

    routes = [
        Route("/health", health),
        Route("/search", search),
        Route("/products/{product_id:int}/similar", similar),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


class Throttled(Exception):
    """The cap of new (paid) queries a minute is reached."""

    def __init__(self, per_minute: int, seconds: int):
        super().__init__(
            f"the cap of {per_minute} new text or image queries a minute is reached (each costs a Replicate "
            f"prediction; a repeated query is answered from the cache): try again in {seconds} s"
        )
        self.seconds = seconds


def loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
