"""Nearest images, and from them each product's most similar products (its score: the best pair of images).

For each image we find its L nearest images; a product's candidates are the other products those neighbours
belong to. With L large enough this is exact: any product missing from an image's list scores at most that list's
lowest similarity (its floor), so a product whose K-th score reaches every one of its images' floors has its exact
top K. Products that do not are computed again against every image (`exact_lists`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator

import numpy as np

from replicate_assets.similarity.vectors import DTYPE

# Below this many images, neighbours are found exactly (a matrix product) and the lists are exact; above, with an
# inverted-file index probing IVF_PROBES lists: recall@20 of the lists 0.992 at 100,000 images (BENCHMARKS.md).
EXACT_LIMIT = 30_000
IVF_PROBES = 24


@dataclasses.dataclass(frozen=True)
class Images:
    """The images of live products for one model: ids, their products, unit vectors, digests and URL hashes."""

    ids: np.ndarray  # int64, product_image_id
    products: np.ndarray  # int64, product_id
    vectors: np.ndarray  # (n, d) float32, unit rows
    digests: np.ndarray  # object (str): identical vectors share one
    url_hashes: np.ndarray  # object (str | None)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> Images:
        return Images(
            self.ids[mask], self.products[mask], self.vectors[mask], self.digests[mask], self.url_hashes[mask]
        )


def _faiss():
    import faiss

    faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
    return faiss


def nearest(queries: np.ndarray, base: np.ndarray, k: int, exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most similar rows of `base` for each query (inner product of unit vectors: cosine), best first.

    Returns (positions in `base`, similarities); a position of -1 pads when `base` has fewer than `k` rows.
    `exact=False` with a large base uses an inverted-file index (faster, recall below 1).
    """
    k = max(1, min(k, len(base))) if len(base) else 1
    if len(base) == 0:
        return np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), -np.inf, DTYPE)
    sims, positions = _index(base, exact).search(np.ascontiguousarray(queries, dtype=DTYPE), k)
    return positions.astype(np.int64), sims


def nearest_to_each(base: np.ndarray, k: int, exact: bool, rows: int = 50_000):
    """`nearest` of every row of `base` among `base`, a block of `rows` queries at a time (one index): yields
    (first row, positions, similarities), so that a million rows' neighbours are never all held at once."""
    k = max(1, min(k, len(base)))
    index = _index(base, exact) if len(base) else None
    for lo in range(0, len(base), rows):
        sims, positions = index.search(np.ascontiguousarray(base[lo : lo + rows], dtype=DTYPE), k)
        yield lo, positions.astype(np.int64), sims


def _index(base: np.ndarray, exact: bool):
    """A faiss index over `base`: flat (exact) up to EXACT_LIMIT rows or when asked, else an inverted file."""
    faiss = _faiss()
    if exact or len(base) <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(base.shape[1])
    else:
        lists = int(4 * np.sqrt(len(base)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(base[rng.choice(len(base), min(len(base), 40 * lists), replace=False)])
        index.nprobe = IVF_PROBES
    index.add(np.ascontiguousarray(base, dtype=DTYPE))
    return index


def best_pairs(
    query_products: np.ndarray, positions: np.ndarray, sims: np.ndarray, base_products: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(product, other product, best similarity) for every pair the neighbour lists show, a product never with
    itself; each pair once, with its best image pair."""
    width = positions.shape[1]
    p = np.repeat(query_products, width)
    flat = positions.ravel()
    valid = flat >= 0
    q = np.where(valid, base_products[np.maximum(flat, 0)], -1)
    s = sims.ravel()
    keep = valid & (q != p)
    return best_of(p[keep], q[keep], s[keep])


def top(p: np.ndarray, q: np.ndarray, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The `k` best pairs of each product, best first (ties: the smaller product id): (p, q, s, rank from 1)."""
    order = np.lexsort((q, -s, p))
    p, q, s = p[order], q[order], s[order]
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]]) if len(p) else np.zeros(0, np.int64)
    rank = np.arange(len(p)) - np.repeat(starts, np.diff(np.r_[starts, len(p)])) + 1
    keep = rank <= k
    return p[keep], q[keep], s[keep], rank[keep]


def floors(query_products: np.ndarray, lowest: np.ndarray, exhaustive: bool) -> dict[int, float]:
    """Per product: the highest of its images' lowest listed similarities `lowest` (what an unlisted product may
    score)."""
    if exhaustive:
        return {}
    order = np.argsort(query_products, kind="stable")
    products, lowest = query_products[order], lowest[order]
    starts = np.flatnonzero(np.r_[True, products[1:] != products[:-1]])
    return dict(zip(products[starts].tolist(), np.maximum.reduceat(lowest, starts).tolist(), strict=True))


def uncertain(
    p: np.ndarray, s: np.ndarray, rank: np.ndarray, k: int, floor: dict[int, float], every: np.ndarray
) -> set[int]:
    """Products whose list may miss a better product: fewer than `k` found, or a K-th score below their floor."""
    if not floor:
        return set()
    kth = dict(zip(p[rank == k].tolist(), s[rank == k].tolist(), strict=True))
    return {int(x) for x in every if kth.get(int(x), -np.inf) < floor.get(int(x), -np.inf)}


def score_blocks(
    images: Images, products: Iterable[int], rows: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exact scores of `products` against every product, a block of about `rows` images at a time:
    (the block's products, every product, matrix M) with M[i, j] the best pair of their images (cosine)."""
    order = np.argsort(images.products, kind="stable")
    sorted_products, base = images.products[order], images.vectors[order]
    starts = np.flatnonzero(np.r_[True, sorted_products[1:] != sorted_products[:-1]])
    targets = sorted_products[starts]
    chosen = np.flatnonzero(np.isin(sorted_products, np.fromiter(products, np.int64)))
    lo = 0
    while lo < len(chosen):
        hi = min(len(chosen), lo + rows)
        while hi < len(chosen) and sorted_products[chosen[hi]] == sorted_products[chosen[hi - 1]]:
            hi += 1  # a product's images stay in one block
        block = chosen[lo:hi]
        per_target = by_product(base[block] @ base.T, starts, len(base))
        owners = sorted_products[block]
        first = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        yield owners[first], targets, np.maximum.reduceat(per_target, first, axis=0)
        lo = hi


def by_product(scores: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Each row's best score per product, the columns being images grouped by product from `starts`. With few
    images per product, the max of one column per image slot (much faster than reduceat); else reduceat."""
    counts = np.diff(np.r_[starts, width])
    if counts.max() > 8:
        return np.maximum.reduceat(scores, starts, axis=1)
    best = scores[:, starts]
    for slot in range(1, int(counts.max())):
        best = np.maximum(best, scores[:, starts + np.minimum(slot, counts - 1)])
    return best


def best_of(p: np.ndarray, q: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (p, q) once, with its best score."""
    order = np.lexsort((-s, q, p))
    p, q, s = p[order], q[order], s[order]
    first = np.ones(len(p), dtype=bool)
    first[1:] = (p[1:] != p[:-1]) | (q[1:] != q[:-1])
    return p[first], q[first], s[first]
