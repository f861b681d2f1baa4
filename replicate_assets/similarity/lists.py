"""Each product's top K similar products, and the products that show the very same image.

`similar_products` computes every list (a full rebuild); `added_to_lists` updates existing lists with new
images (an increment). Both exclude a product itself, products sharing the very same image (same URL or an
identical vector: duplicates, reported apart), and products of no interest (soft-deleted ones are never passed in).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from replicate_assets.similarity.neighbours import (
    EXACT_LIMIT,
    Images,
    best_pairs,
    exact_scores,
    floors,
    nearest,
    top,
    uncertain,
)

SAME_URL, IDENTICAL = "same image URL", "identical image"


@dataclasses.dataclass
class Lists:
    """Similarity rows: product p's rank-th most similar product is q, with score s."""

    p: np.ndarray
    q: np.ndarray
    s: np.ndarray
    rank: np.ndarray

    def __len__(self) -> int:
        return len(self.p)

    def by_product(self) -> dict[int, list[tuple[int, float]]]:
        found: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for p, q, s in zip(self.p.tolist(), self.q.tolist(), self.s.tolist(), strict=True):
            found[p].append((q, s))
        return dict(found)


def duplicate_pairs(images: Images) -> dict[tuple[int, int], str]:
    """(product, other product) -> why they show the very same image, in both directions."""
    found: dict[tuple[int, int], str] = {}
    for reason, keys in ((IDENTICAL, images.digests), (SAME_URL, images.url_hashes)):
        groups: dict[str, set[int]] = defaultdict(set)
        for key, product in zip(keys.tolist(), images.products.tolist(), strict=True):
            if key:
                groups[key].add(product)
        for products in groups.values():
            for p in products:
                for q in products - {p}:
                    found[(p, q)] = reason  # a shared URL says more than an identical vector: it wins
    return found


def _without(p: np.ndarray, q: np.ndarray, s: np.ndarray, pairs: dict[tuple[int, int], str]):
    if not pairs or not len(p):
        return p, q, s
    keys = np.array([a * (1 << 32) + b for a, b in pairs], dtype=np.int64)
    keep = ~np.isin(p * (1 << 32) + q, keys)
    return p[keep], q[keep], s[keep]


def similar_products(images: Images, k: int) -> Lists:
    """Every product's top `k` (exact below EXACT_LIMIT images; above, neighbours come from an inverted file)."""
    if len(images) == 0:
        empty = np.zeros(0, np.int64)
        return Lists(empty, empty, np.zeros(0, np.float32), empty)
    duplicates = duplicate_pairs(images)
    own = int(np.bincount(np.unique(images.products, return_inverse=True)[1]).max())
    width = min(len(images), k * 3 + own + 1)
    positions, sims = nearest(images.vectors, images.vectors, width, exact=len(images) <= EXACT_LIMIT)
    p, q, s = _without(*best_pairs(images.products, positions, sims, images.products), duplicates)
    p, q, s, rank = top(p, q, s, k)
    every = np.unique(images.products)
    unsure = uncertain(p, s, rank, k, floors(images.products, sims, exhaustive=width >= len(images)), every)
    if unsure:
        keep = ~np.isin(p, list(unsure))
        ep, eq, es = _without(*exact_scores(images, sorted(unsure)), duplicates)
        ep, eq, es, erank = top(ep, eq, es, k)
        p, q, s, rank = (np.concatenate(x) for x in ((p[keep], ep), (q[keep], eq), (s[keep], es), (rank[keep], erank)))
    return Lists(p, q, s, rank)


def recomputed(images: Images, products: list[int], k: int) -> Lists:
    """The exact top `k` of `products` (their images against every image)."""
    p, q, s = _without(*exact_scores(images, products), duplicate_pairs(images))
    return Lists(*top(p, q, s, k))


def new_product_lists(images: Images, fresh: list[int], k: int) -> tuple[Lists, np.ndarray, np.ndarray, np.ndarray]:
    """The exact lists of the `fresh` products, and every (fresh product, other product, score) pair behind them
    (the scores other lists may take them in with: they are symmetric)."""
    p, q, s = _without(*exact_scores(images, fresh), duplicate_pairs(images))
    return Lists(*top(p, q, s, k)), p, q, s


def entering(
    p: np.ndarray, q: np.ndarray, s: np.ndarray, fresh: set[int], kth: dict[int, float]
) -> dict[int, list[tuple[int, float]]]:
    """Per existing product, the fresh products that now enter its list: those scoring above its K-th score (any
    score when its list is not full)."""
    offers: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for a, b, score in zip(p.tolist(), q.tolist(), s.tolist(), strict=True):
        if b not in fresh and score > kth.get(b, -np.inf):
            offers[b].append((a, score))
    return dict(offers)


def merged(current: dict[int, list[tuple[int, float]]], offers: dict[int, list[tuple[int, float]]], k: int) -> Lists:
    """The lists of the products in `offers`: their current entries and the offered ones, top `k`."""
    ps, qs, ss = [], [], []
    for product, offered in offers.items():
        entries = dict(current.get(product, []))
        for other, score in offered:
            entries[other] = max(score, entries.get(other, -np.inf))
        for other, score in entries.items():
            ps.append(product), qs.append(other), ss.append(score)
    return Lists(*top(np.asarray(ps, np.int64), np.asarray(qs, np.int64), np.asarray(ss, np.float32), k))
