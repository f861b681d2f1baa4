"""The search API: `GET /search?text=...` or `?image=URL`, `GET /products/{id}/similar`, `GET /health`.

Answers are JSON, errors too, all of one shape: `{"status": 400, "title": "Bad Request", "detail": "what to fix"}`
(429 and 503 add `retry_after` and a `Retry-After` header). A bad query is a 400 checked before anything is paid
(`similarity.queries`, the same rules as the CLI); an unknown or deleted product a 404. A text or image query that
is not in the cache costs one Replicate prediction, once, however many ask at once: at most `queries_per_minute`
of those a minute, beyond which the answer is a 429 that says so (cached queries are always answered). When the
shop database or Replicate cannot serve, a 503 with `Retry-After`. Work runs in a thread pool, at most
`max_concurrent` at once and `timeout` seconds each (504). When an API key is set, every route but /health needs it
(`X-API-Key: KEY` or `Authorization: Bearer KEY`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from replicate_assets.api.pages import page_routes
from replicate_assets.api.problems import Busy, Throttled, failure_of, problem
from replicate_assets.replicate.ratelimit import TokenBucket
from replicate_assets.similarity.queries import (
    MAX_LIMIT,
    BadQuery,
    image_query,
    product_id,
    score,
    text_query,
    whole_number,
)
from replicate_assets.similarity.search import Answer, Searcher
from replicate_assets.urls import redact, shown

REFRESH_SECONDS = 60.0
SLOT_WAIT_SECONDS = 5.0
log = logging.getLogger("replicate_assets.api")


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
                **({"live": True} if h.live else {}),
            }
            for h in answer.hits
        ],
        "cached": answer.cached,
        "took_ms": round(answer.milliseconds, 2),
        "model": searcher.model,
        "index": index.kind if index is not None else None,
    }


def _given_key(request: Request) -> str:
    return request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")


def create_app(
    searcher: Searcher,
    *,
    api_key: str | None = None,
    queries_per_minute: int = 30,
    max_concurrent: int = 8,
    timeout: float = 20.0,
    image_base_url: str | None = None,
) -> Starlette:
    """The API and the page over `searcher` (its index is loaded at start, and again every minute in the
    background); `image_base_url` resolves relative image paths for the page's pictures."""
    slots = asyncio.Semaphore(max_concurrent)
    predictions = TokenBucket(queries_per_minute / 60.0, queries_per_minute)
    refreshed = threading.Event()

    def refresh_forever() -> None:
        while not refreshed.wait(REFRESH_SECONDS):
            try:
                searcher.refresh()
            except Exception:  # a database hiccup: the index in memory keeps serving
                continue

    def admit_paid_query() -> None:
        """A query that is not cached costs a prediction: within the cap, or Throttled."""
        wait = predictions.take()
        if wait:
            raise Throttled(queries_per_minute, math.ceil(wait))

    async def limited(work: Callable[[], Any]) -> Any:
        """`work` in the thread pool: at most `max_concurrent` at once (Busy after SLOT_WAIT_SECONDS), each at
        most `timeout` seconds (TimeoutError)."""
        try:
            await asyncio.wait_for(slots.acquire(), timeout=SLOT_WAIT_SECONDS)
        except TimeoutError:
            raise Busy from None
        try:
            return await asyncio.wait_for(run_in_threadpool(work), timeout=timeout)
        finally:
            slots.release()

    async def guarded(request: Request, work: Callable[[], dict[str, Any]], image: str | None = None) -> JSONResponse:
        if api_key and not hmac.compare_digest(_given_key(request).encode(), api_key.encode()):
            return problem(401, "a valid API key is needed: send it as X-API-Key")
        try:
            return JSONResponse(await limited(work))
        except Exception as err:
            found = failure_of(err, image, timeout)
            if found is None:
                raise
            return problem(found.status, found.detail, found.retry_after)

    async def health(request: Request) -> JSONResponse:
        def check() -> dict[str, Any]:
            body: dict[str, Any] = {"model": searcher.model}
            try:
                with searcher.schema.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                body["database"] = "ok"
            except sa.exc.SQLAlchemyError:
                body["database"] = "unreachable"
            index = searcher.index
            body["index"] = index.kind if index is not None else "not loaded"
            if index is not None:
                body.update(images=len(index), products=len(searcher.live))
            ready = body["database"] == "ok" and index is not None
            body["status"] = "ok" if ready else "unavailable"
            return body

        body = await run_in_threadpool(check)
        if body["status"] == "ok":
            return JSONResponse(body)
        return JSONResponse(body, 503, headers={"Retry-After": "5"})

    async def search(request: Request) -> JSONResponse:
        params = request.query_params
        text, image = params.get("text"), params.get("image")

        def work() -> dict[str, Any]:
            limit = whole_number("limit", params.get("limit"), 1, MAX_LIMIT, 10)
            min_score = score("min_score", params.get("min_score"))
            if (text is None) == (image is None):
                raise BadQuery("ask with exactly one of text=... or image=URL")
            query = text_query(text) if text is not None else image_query(image)
            answer = searcher.query(query.kind, query.value, limit, min_score, admit=admit_paid_query)
            shown_value = query.value if query.kind == "text" else shown(query.value)
            return _answer(searcher, answer, {query.kind: shown_value, "limit": limit})

        return await guarded(request, work, image=image)

    async def similar(request: Request) -> JSONResponse:
        def work() -> dict[str, Any]:
            product = product_id(request.path_params["product_id"])
            limit = whole_number("limit", request.query_params.get("limit"), 1, MAX_LIMIT, 10)
            min_score = score("min_score", request.query_params.get("min_score"))
            answer = searcher.like_product(product, limit, min_score)
            return _answer(searcher, answer, {"like_product": product, "limit": limit})

        return await guarded(request, work)

    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        detail = {404: f"no such route: {request.url.path}; see GET /search, /products/ID/similar, /health, /"}
        methods = {405: f"{request.method} is not allowed here: use GET"}
        return problem(err.status_code, {**detail, **methods}.get(err.status_code, str(err.detail)))

    async def crashed(request: Request, err: Exception) -> JSONResponse:
        log.error("unexpected error on %s: %s", request.url.path, redact(repr(err)))
        return problem(500, "the search service failed unexpectedly: the operator's log says more")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with contextlib.suppress(Exception):  # `serve` loaded it once already; /health says when it is missing
            await run_in_threadpool(searcher.refresh)
        threading.Thread(target=refresh_forever, name="index-refresh", daemon=True).start()
        yield
        refreshed.set()

    routes = [
        Route("/health", health),
        Route("/search", search),
        Route("/products/{product_id}/similar", similar),
        *page_routes(
            searcher,
            api_key=api_key,
            image_base_url=image_base_url,
            limited=limited,
            admit=admit_paid_query,
            timeout=timeout,
            key_given=_given_key,
        ),
    ]
    handlers = {HTTPException: http_error, Exception: crashed}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)


def loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (127.0.0.0/8, ::1); False when it names
    another, or none."""
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {info[4][0].split("%")[0] for info in found}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
