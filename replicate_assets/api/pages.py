"""The page for people: search results, a product's similar products and duplicates, a review of the lists, as
server-rendered HTML (Jinja2, everything escaped; no JavaScript). Pictures come through `/thumbnails/ID` only.

The same access rule as the API: open on loopback; with an API key, the page asks for it once (`/login`) and
keeps a token derived from it in an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from replicate_assets.api.problems import failure_of
from replicate_assets.api.thumbnails import ThumbnailError, Thumbnails
from replicate_assets.db.browse import Browse, Product
from replicate_assets.db.reports import Reports
from replicate_assets.similarity.queries import (
    MAX_LIMIT,
    MAX_PRODUCT_ID,
    BadQuery,
    image_query,
    product_id,
    text_query,
    whole_number,
)
from replicate_assets.similarity.search import Searcher
from replicate_assets.urls import shown

COOKIE = "replicate_assets_session"
RESULTS = 24  # products in a grid
SAMPLE, TOP = 8, 5  # the review: products drawn, neighbours shown for each
LISTED = 50  # products without neighbours, failed images: at most this many
FORM_BYTES = 4096
Limited = Callable[[Callable[[], Any]], Awaitable[Any]]

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def session_token(api_key: str) -> str:
    """What the cookie holds: derived from the key (the key itself never leaves the form)."""
    return hmac.new(api_key.encode(), b"replicate_assets page session", hashlib.sha256).hexdigest()


def page_routes(
    searcher: Searcher,
    *,
    api_key: str | None,
    image_base_url: str | None,
    limited: Limited,
    admit: Callable[[], None],
    timeout: float,
    key_given: Callable[[Request], str],
) -> list[Route]:
    browse = Browse(searcher.schema, searcher.model)
    thumbnails = Thumbnails(browse, image_base_url)

    def allowed(request: Request) -> bool:
        if not api_key:
            return True
        token = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(token.encode(), session_token(api_key).encode()) or hmac.compare_digest(
            key_given(request).encode(), api_key.encode()
        )

    def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        values = {"model": searcher.model, "problem": None, **values}
        return HTMLResponse(templates.get_template(name).render(**values), status, headers=_NO_FRAMES)

    def sign_in(request: Request) -> HTMLResponse:
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return render("login.html", 401, next=wanted)

    async def home(request: Request) -> Response:
        if not allowed(request):
            return sign_in(request)
        params = {k: v for k, v in request.query_params.items() if k in ("text", "image", "like") and v.strip()}
        shown_values = {"text": params.get("text"), "image": params.get("image"), "like": params.get("like")}
        page = {**shown_values, "hits": None, "product": None, "duplicates": None, "heading": None, "summary": ""}
        if not params:
            return render("search.html", **page)

        def work() -> dict[str, Any]:
            if len(params) > 1:
                raise BadQuery("ask with one of: words, an example image URL, or a product id")
            if "like" in params:
                product = product_id(params["like"])
                answer = searcher.like_product(product, RESULTS)
                pairs = browse.duplicates(product)
                found = browse.products([product, *(other for other, _ in pairs)])
                duplicates = [(found[o], why) for o, why in pairs if o in found]
                heading = f"Similar products ({len(answer.hits)})"
                return {
                    "hits": answer.hits,
                    "product": found.get(product),
                    "duplicates": duplicates,
                    "heading": heading,
                }
            query = text_query(params["text"]) if "text" in params else image_query(params["image"])
            answer = searcher.query(query.kind, query.value, min(RESULTS, MAX_LIMIT), admit=admit)
            cost = "answered from the cache" if answer.cached else "1 Replicate prediction"
            asked = query.value if query.kind == "text" else shown(query.value)
            return {"hits": answer.hits, "heading": f"Products for {asked}", "summary": cost}

        try:
            return render("search.html", **{**page, **await limited(work)})
        except Exception as err:  # every failure we expect is a message on the page, with its status
            found = failure_of(err, params.get("image"), timeout)
            if found is None:
                raise
            headers = {"Retry-After": str(found.retry_after)} if found.retry_after else {}
            if "like" in params and found.status == 404:  # a product without an embedding yet: still shown
                page["product"] = await limited(lambda: _existing(browse, params["like"]))
            response = render("search.html", found.status, **{**page, "problem": found.detail})
            response.headers.update(headers)
            return response

    async def review(request: Request) -> Response:
        if not allowed(request):
            return sign_in(request)

        def work() -> dict[str, Any]:
            drawn = browse.sample(SAMPLE, random.Random())
            products = browse.products(drawn)
            sample = [(products[p], searcher.like_product(p, TOP).hits) for p in drawn if p in products]
            lonely = browse.products(browse.without_neighbours(LISTED))
            failed = Reports(searcher.schema).failed_images(searcher.model, limit=LISTED)
            return {"sample": sample, "lonely": list(lonely.values()), "failed": failed}

        try:
            return render("review.html", **await limited(work))
        except Exception as err:
            found = failure_of(err, None, timeout)
            if found is None:
                raise
            return render("review.html", found.status, sample=[], lonely=[], failed=[], problem=found.detail)

    async def thumbnail(request: Request) -> Response:
        if not allowed(request):
            return Response(status_code=401)
        try:
            image = whole_number("image id", request.path_params["image_id"], 1, MAX_PRODUCT_ID, 0)
            body, kind = await limited(lambda: thumbnails.get(image))
        except (ThumbnailError, BadQuery) as err:
            status = getattr(err, "status", 400)
            return Response(str(err), status, media_type="text/plain", headers={"Cache-Control": "no-store"})
        return Response(body, media_type=kind, headers={"Cache-Control": "private, max-age=300", **_NO_SNIFF})

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return render("login.html", next=_local(request.query_params.get("next")))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_BYTES:  # a sign-in form is a few bytes: nothing larger is read
                return Response("the form is too large", 413, media_type="text/plain")
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        key, wanted = form.get("key", [""])[0], _local(form.get("next", ["/"])[0])
        if not api_key:
            return RedirectResponse(wanted, 303)
        if not hmac.compare_digest(key.encode(), api_key.encode()):
            return render("login.html", 401, next=wanted, problem="That is not the key: try again.")
        response = RedirectResponse(wanted, 303)
        secure = request.url.scheme == "https"
        response.set_cookie(
            COOKIE, session_token(api_key), max_age=30 * 86400, httponly=True, samesite="strict", secure=secure
        )
        return response

    return [
        Route("/", home),
        Route("/review", review),
        Route("/thumbnails/{image_id}", thumbnail),
        Route("/login", login, methods=["GET", "POST"]),
    ]


def _existing(browse: Browse, raw: str) -> Product | None:
    try:
        product = product_id(raw)
    except (BadQuery, LookupError):
        return None
    return browse.products([product]).get(product)


def _local(target: str | None) -> str:
    """Only a path of this server (never `//host` or `https://...`): after signing in, nobody is sent elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


_NO_FRAMES = {"X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'"}
_NO_SNIFF = {"X-Content-Type-Options": "nosniff"}
