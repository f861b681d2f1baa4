"""Search the catalogue: by words, by an example photo, or like a product. Results are products (a product scores
its best-matching image), with their name, score and best image.

A text or image query is embedded by the configured Replicate model once: its unit vector is kept in
`search_query_embeddings`, so asking again costs nothing and answers in milliseconds.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import sqlalchemy as sa

from replicate_assets.db.embeddings import EmbeddingStore
from replicate_assets.db.engine import CatalogueError
from replicate_assets.db.query_cache import QueryCache
from replicate_assets.db.schema import Schema
from replicate_assets.db.similarities import SimilarityStore
from replicate_assets.db.tables import SIMILARITIES, VECTORS
from replicate_assets.db.vectors import VectorStore
from replicate_assets.similarity.index import SearchIndex, serving
from replicate_assets.similarity.queries import NoSuchProduct, image_query, text_query
from replicate_assets.similarity.vectors import normalised

Embed = Callable[[str, str], list[float]]  # (kind, value) -> raw embedding, one Replicate prediction
SPARE = 10  # candidates beyond the limit, for products deleted since the index was built
WAIT_SECONDS = 60.0  # how long a query waits for another process paying for the same query
NOTHING_YET = (
    "nothing to search for {model} yet: the similarity assets have not run on this database. Once embedding_table "
    "has, run: dagster asset materialize -m replicate_assets --select product_similarities,similarity_index "
    "(or start the similarity_automation sensor)"
)


@dataclasses.dataclass(frozen=True)
class Hit:
    product_id: int
    name: str | None
    score: float
    image_url: str | None
    live: bool = False  # found in the live index, not in product_similarities (newer than the lists)
    image_id: int | None = None  # the best image's product_image_id (or the product's first)


@dataclasses.dataclass(frozen=True)
class Answer:
    hits: list[Hit]
    cached: bool  # the query's embedding was known: no prediction was paid for
    milliseconds: float


class Searcher:
    """Searches one shop database's products for one model; `refresh` reloads the vectors (or the saved index)."""

    def __init__(self, schema: Schema, model: str, index_folder: str | None = None, embed: Embed | None = None):
        self.schema, self.model, self.index_folder, self.embed_remote = schema, model, index_folder, embed
        self.cache, self.similar = QueryCache(schema), SimilarityStore(schema)
        self.index: SearchIndex | None = None
        self.loaded_at = 0.0
        self.live: set[int] = set()
        self._flights: dict[tuple[str, str], Future] = {}  # queries being embedded by this process now
        self._flights_lock = threading.Lock()

    def refresh(self) -> SearchIndex:
        """Load the live vectors; use the saved index when it covers exactly them, else build one in memory.
        Raises CatalogueError, saying what to run, when the similarity assets have not run for the model."""
        if {VECTORS, SIMILARITIES} & set(self.schema.missing_tables()):
            raise CatalogueError(NOTHING_YET.format(model=self.model))
        images = VectorStore(self.schema).catalogue(self.model).images
        if not len(images):
            raise CatalogueError(NOTHING_YET.format(model=self.model))
        self.index = serving(self.index_folder, self.model, images)
        self.live = set(images.products.tolist())
        self.loaded_at = time.monotonic()
        return self.index

    def embed(self, kind: str, value: str, admit: Callable[[], None] | None = None) -> tuple[np.ndarray, bool]:
        """The unit vector of a (normalised) query: from the cache, or one prediction, whatever the concurrency.
        Returns (vector, cached); cached is False only for the one caller that paid. Raises ReplicateError when
        refused. `admit` is called only before a prediction is paid for, and may refuse it by raising."""
        vector = self.cache.get(self.model, kind, value)
        if vector is not None:
            return vector, True
        with self._flights_lock:  # one prediction per query in this process: the others wait for its answer
            flight = self._flights.get((kind, value))
            leader = flight is None
            if leader:
                flight = self._flights[(kind, value)] = Future()
        if not leader:
            return flight.result(timeout=WAIT_SECONDS)[0], True
        try:
            found = self._embed_once(kind, value, admit)
            flight.set_result(found)
            return found
        except BaseException as err:
            flight.set_exception(err)
            raise
        finally:
            with self._flights_lock:
                del self._flights[(kind, value)]

    def _embed_once(self, kind: str, value: str, admit: Callable[[], None] | None) -> tuple[np.ndarray, bool]:
        """Across processes: claim the query in the cache table, or wait for the process that holds it."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.cache.claim(self.model, kind, value):
            vector = self.cache.get(self.model, kind, value)
            if vector is not None:
                return vector, True
            if time.monotonic() > deadline:
                raise TimeoutError(f"another process has been embedding this query for over {WAIT_SECONDS:g} s")
            time.sleep(0.05)
        try:
            if admit is not None:
                admit()
            if self.embed_remote is None:
                raise RuntimeError("this searcher has no Replicate client: only product searches are possible")
            vector = normalised(np.asarray(self.embed_remote(kind, value), dtype=np.float32))
        except BaseException:
            self.cache.release(self.model, kind, value)
            raise
        self.cache.put(self.model, kind, value, vector)
        return vector, False

    def query(
        self,
        kind: str,
        value: str,
        limit: int = 10,
        min_score: float | None = None,
        admit: Callable[[], None] | None = None,
    ) -> Answer:
        """Products for a text (kind "text") or an image URL (kind "image"); `admit` as in `embed`. The query is
        checked and normalised first (BadQuery), so every caller shares one cache entry per query."""
        started = time.perf_counter()
        value = (text_query if kind == "text" else image_query)(value).value
        self.index or self.refresh()  # nothing to search: say so before paying for the query's embedding
        vector, cached = self.embed(kind, value, admit)
        hits = self.by_vector(vector, limit, min_score)
        return Answer(hits, cached, (time.perf_counter() - started) * 1000)

    def by_vector(
        self, vector: np.ndarray, limit: int, min_score: float | None = None, skip: int | None = None
    ) -> list[Hit]:
        """The best `limit` products for a unit vector (their best image's score), best first."""
        index = self.index or self.refresh()
        width, best = min(len(index), limit * 4 + 16), {}
        while True:
            positions, sims = index.search(vector.reshape(1, -1), width)
            for position, score in zip(positions[0].tolist(), sims[0].tolist(), strict=True):
                product = int(index.products[position]) if position >= 0 else None
                if product is None or product == skip or product not in self.live or product in best:
                    continue
                best[product] = (float(score), int(index.ids[position]))
            if len(best) >= limit + SPARE or width >= len(index):
                break
            width = min(len(index), width * 4)
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[: limit + SPARE]
        ranked = [(p, s, i) for p, (s, i) in ranked if min_score is None or s >= min_score]
        return self._hits(ranked, limit)

    def like_product(self, product_id: int, limit: int = 10, min_score: float | None = None) -> Answer:
        """Products similar to `product_id`: its precomputed list (product_similarities), else computed now from
        its vectors (hits marked live). Raises NoSuchProduct for a product that does not exist or is deleted now,
        or that has no embedded image yet."""
        started = time.perf_counter()
        self.index or self.refresh()
        if not self.similar.live([product_id]):
            raise NoSuchProduct(f"product {product_id} does not exist (or is deleted)")
        listed = self.similar.lists([product_id]).get(product_id)
        if listed:
            ranked = [(q, s, None) for q, s in listed if min_score is None or s >= min_score]
            return Answer(self._hits(ranked, limit), True, (time.perf_counter() - started) * 1000)
        vectors = self._vectors_of(product_id)
        if vectors is None:
            raise NoSuchProduct(
                f"product {product_id} has no embedded image: none of its images has an embedding yet "
                "(`replicate-assets failed` lists those that failed, with the reason)"
            )
        found: dict[int, Hit] = {}
        for vector in vectors:
            for hit in self.by_vector(vector, limit, min_score, skip=product_id):
                if hit.product_id not in found or found[hit.product_id].score < hit.score:
                    found[hit.product_id] = dataclasses.replace(hit, live=True)
        hits = sorted(found.values(), key=lambda h: (-h.score, h.product_id))[:limit]
        return Answer(hits, True, (time.perf_counter() - started) * 1000)

    def _vectors_of(self, product_id: int) -> np.ndarray | None:
        """The product's unit vectors: from the index, the similarity copy, or (newer than both) product_embeddings."""
        index = self.index or self.refresh()
        positions = np.flatnonzero(index.products == product_id)
        if len(positions) and index.vectors is not None:
            return index.vectors[positions]
        vectors = VectorStore(self.schema).product_vectors(self.model, product_id)  # one product's rows, indexed
        if len(vectors):
            return vectors
        published = EmbeddingStore(self.schema).product_embeddings(self.model, product_id)
        usable = [v for v in published if isinstance(v, list) and len(v) == getattr(index.index, "d", len(v))]
        return np.stack([normalised(np.asarray(v, dtype=np.float32)) for v in usable]) if usable else None

    def _hits(self, ranked: list[tuple[int, float, int | None]], limit: int | None = None) -> list[Hit]:
        """Hits with the products' names and the URL of the best image (or of their first one): only products that
        exist and are not deleted now, at most `limit`."""
        live = self.similar.live(p for p, _, _ in ranked) if ranked else set()
        ranked = [r for r in ranked if r[0] in live][:limit]
        if not ranked:
            return []
        products = [p for p, _, _ in ranked]
        p, v = self.schema.products, self.schema.vectors
        with self.schema.engine.connect() as conn:
            names = {}
            if "name" in p.c:
                names = dict(conn.execute(sa.select(p.c.id, p.c.name).where(p.c.id.in_(products))).all())
            first: dict[int, int] = {}  # each product's first image
            images: dict[int, str] = {}
            for image_id, product, url in conn.execute(
                sa.select(v.c.product_image_id, v.c.product_id, v.c.image_url)
                .where(v.c.product_id.in_(products), v.c.model == self.model, v.c.removed.is_(False))
                .order_by(v.c.product_image_id)
            ):
                images[int(image_id)] = url
                first.setdefault(int(product), int(image_id))
        hits = []
        for product, score, image in ranked:
            image = image if image in images else first.get(product)
            hits.append(Hit(product, names.get(product), round(score, 4), images.get(image), image_id=image))
        return hits
