"""`replicate-assets search` and `replicate-assets serve`: the catalogue searched from the shell or over HTTP."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading

from replicate_assets.cli.commands import shop
from replicate_assets.replicate import ClientOptions, ReplicateClient, model_spec
from replicate_assets.settings import Settings
from replicate_assets.similarity.queries import (
    MAX_LIMIT,
    image_query,
    product_id,
    score,
    text_query,
    whole_number,
)
from replicate_assets.similarity.search import Searcher
from replicate_assets.urls import shown


def searcher_for(settings: Settings, token: str | None = None) -> Searcher:
    """A searcher over the shop's vectors, embedding new queries through the configured model (one client, with
    `token`, else REPLICATE_API_TOKEN)."""
    model = model_spec(settings.replicate_model).reference
    options = ClientOptions(base_url=settings.replicate_base_url, model=settings.replicate_model)
    clients: list[ReplicateClient] = []
    lock = threading.Lock()

    def embed(kind: str, value: str) -> list[float]:
        with lock:
            if not clients:
                clients.append(ReplicateClient(token or os.environ.get("REPLICATE_API_TOKEN"), options))
        return clients[0].embed_query(**{kind: value})

    return Searcher(shop(settings), model, settings.similarity_index_dir, embed)


def search(args: argparse.Namespace) -> int:
    # Checked before any connection or payment, by the same rules as the HTTP API.
    limit = whole_number("--limit", args.limit, 1, MAX_LIMIT, 10)
    min_score = score("--min-score", args.min_score)
    query = None
    if args.text is not None:
        query = text_query(args.text)
    elif args.image is not None:
        query = image_query(args.image)
    product = product_id(args.like_product) if query is None else None
    settings = Settings.from_env()
    searcher = searcher_for(settings)
    if query is None:
        asked = f"like product {product}"
        answer = searcher.like_product(product, limit, min_score)
    else:
        asked = f"{query.kind} {shown(query.value) if query.kind == 'image' else query.value!r}"
        answer = searcher.query(query.kind, query.value, limit, min_score)
    rows = [(hit, shown(hit.image_url) if hit.image_url else None) for hit in answer.hits]
    if args.json:
        hits = [dataclasses.asdict(hit) | {"image_url": url} for hit, url in rows]
        took = round(answer.milliseconds, 2)
        print(json.dumps({"query": asked, "results": hits, "cached": answer.cached, "took_ms": took}))
        return 0
    if not rows:
        print(f"no product matches {asked}" + (f" with a score of at least {min_score}" if min_score else ""))
    for hit, url in rows:
        live = "  (live: newer than the lists)" if hit.live else ""
        print(f"{hit.score:6.3f}  #{hit.product_id:<6} {hit.name or '':<32} {url or ''}{live}")
    cost = "no prediction (cached)" if answer.cached else "1 prediction"
    print(f"({len(rows)} products for {asked}; {cost}; {answer.milliseconds:.0f} ms)")
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from replicate_assets.api.app import create_app, loopback

    settings = Settings.from_env()
    if not loopback(args.host) and not settings.search_api_key:
        print(
            f"error: --host {args.host} listens beyond this machine: set SEARCH_API_KEY first (clients send it as "
            "X-API-Key), or keep the default 127.0.0.1",
            file=sys.stderr,
        )
        return 1
    searcher = searcher_for(settings)
    searcher.refresh()  # a missing table or column is one line here, before the server starts
    app = create_app(
        searcher,
        api_key=settings.search_api_key,
        queries_per_minute=settings.search_queries_per_minute,
        image_base_url=settings.image_base_url,
    )
    print(f"search API on http://{args.host}:{args.port} ({len(searcher.index)} images, {searcher.index.kind} index)")
    print(f"search page on http://{args.host}:{args.port}/ (similar products, a review of the lists)")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
