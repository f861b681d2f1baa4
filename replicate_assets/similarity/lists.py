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
    best_of,
    best_pairs,
    floors,
    nearest_to_each,
    score_blocks,
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

    @classmethod
    def empty(cls) -> Lists:
        none = np.zeros(0, np.int64)
        return cls(none, none, np.zeros(0, np.float32), none)

    def by_product(self) -> dict[int, list[tuple[int, float]]]:
        found: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for p, q, s in zip(self.p.tolist(), self.q.tolist(), self.s.tolist(), strict=True):
            found[p].append((q, s))
        return dict(found)


def duplicate_pairs(images: Images) -> dict[tuple[int, int], str]:
    """(product, other product) -> why they show the very same image, in both directions."""
    found: dict[tuple[int, int], str] = {}
    for reason, keys in ((IDENTICAL, images.digests), (SAME_URL, images.url_hashes)):
        present = np.fromiter((bool(key) for key in keys), dtype=bool, count=len(keys))
        if not present.any():
            continue
        names, group, counts = np.unique(keys[present].astype(str), return_inverse=True, return_counts=True)
        shared = counts[group] > 1  # only keys that several images share can pair products
        groups: dict[int, set[int]] = defaultdict(set)
        for key, product in zip(group[shared].tolist(), images.products[present][shared].tolist(), strict=True):
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


def similar_products(images: Images, k: int, duplicates: dict | None = None) -> Lists:
    """Every product's top `k` (exact below EXACT_LIMIT images; above, neighbours come from an inverted file);
    `duplicates`: `duplicate_pairs(images)` when the caller has it."""
    if len(images) == 0:
        return Lists.empty()
    duplicates = duplicate_pairs(images) if duplicates is None else duplicates
    own = int(np.bincount(np.unique(images.products, return_inverse=True)[1]).max())
    width = min(len(images), k * 3 + own + 1)
    parts, lowest = [], []
    for lo, positions, sims in nearest_to_each(images.vectors, width, exact=len(images) <= EXACT_LIMIT):
        parts.append(best_pairs(images.products[lo : lo + len(positions)], positions, sims, images.products))
        lowest.append(sims[:, -1])
    p, q, s = (np.concatenate([part[i] for part in parts]) for i in range(3))
    # Scores are symmetric: a pair found from one side counts for the other (an approximate index misses some)
    p, q, s = _without(*best_of(np.r_[p, q], np.r_[q, p], np.r_[s, s]), duplicates)
    p, q, s, rank = top(p, q, s, k)
    every = np.unique(images.products)
    unsure = uncertain(p, s, rank, k, floors(images.products, np.concatenate(lowest), width >= len(images)), every)
    if unsure:
        keep = ~np.isin(p, list(unsure))
        exact = recomputed(images, sorted(unsure), k, duplicates)
        ep, eq, es, erank = exact.p, exact.q, exact.s, exact.rank
        p, q, s, rank = (np.concatenate(x) for x in ((p[keep], ep), (q[keep], eq), (s[keep], es), (rank[keep], erank)))
    return Lists(p, q, s, rank)


def _masked(block: np.ndarray, targets: np.ndarray, scores: np.ndarray, duplicates: dict) -> np.ndarray:
    """`scores` with a product's own column and its duplicates' columns at -inf: never offered as similar."""
    scores[np.arange(len(block)), np.searchsorted(targets, block)] = -np.inf
    for row, product in enumerate(block.tolist()):
        for other in duplicates.get(product, ()):
            scores[row, np.searchsorted(targets, other)] = -np.inf
    return scores


def _partners(pairs: dict[tuple[int, int], str]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = defaultdict(set)
    for p, q in pairs:
        found[p].add(q)
    return found


def _best(block: np.ndarray, targets: np.ndarray, scores: np.ndarray, k: int):
    """The best `k` (and a few more, for ties) columns of each row: (p, q, s) with -inf dropped."""
    width = min(k + 4, scores.shape[1])
    columns = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    values = np.take_along_axis(scores, columns, axis=1).ravel()
    p, q = np.repeat(block, width), targets[columns].ravel()
    keep = np.isfinite(values)
    return p[keep], q[keep], values[keep]


def recomputed(images: Images, products: list[int], k: int, duplicates: dict | None = None) -> Lists:
    """The exact top `k` of `products` (their images against every image)."""
    partners = _partners(duplicate_pairs(images) if duplicates is None else duplicates)
    parts = [_best(b, t, _masked(b, t, m, partners), k) for b, t, m in score_blocks(images, products)]
    return _lists(parts, k)


def new_product_lists(
    images: Images,
    fresh: list[int],
    k: int,
    kth: dict[int, float],
    duplicates: dict | None = None,
    watch: dict[int, set[int]] | None = None,
) -> tuple[Lists, dict[int, list[tuple[int, float]]], dict[int, dict[int, float]]]:
    """The exact lists of the `fresh` products (new, or whose images changed), per other product the fresh ones
    that now enter its list: scoring above its K-th score `kth` (any score when its list is not full; scores are
    symmetric), and the new scores of the pairs in `watch` (other product -> fresh products its list shows; -inf
    where one is now a duplicate of it)."""
    partners = _partners(duplicate_pairs(images) if duplicates is None else duplicates)
    parts, offers, floor = [], defaultdict(list), None
    watched: dict[int, dict[int, float]] = defaultdict(dict)
    watching: dict[int, list[int]] = defaultdict(list)  # fresh product -> the lists that show it
    for b, shown in (watch or {}).items():
        for a in shown:
            watching[a].append(b)
    for block, targets, scores in score_blocks(images, fresh):
        scores = _masked(block, targets, scores, partners)
        parts.append(_best(block, targets, scores, k))
        if floor is None:
            floor = np.array([kth.get(t, -np.inf) for t in targets.tolist()], dtype=np.float32)
            floor[np.isin(targets, fresh)] = np.inf  # fresh products' own lists are computed above
        rows, columns = np.nonzero(scores > floor)
        entries = zip(block[rows].tolist(), targets[columns].tolist(), scores[rows, columns].tolist(), strict=True)
        for a, b, score in entries:
            offers[b].append((a, score))
        mine = [(a, b) for a in block.tolist() for b in watching.get(a, ())]
        if mine:
            rows = np.searchsorted(block, [a for a, _ in mine])
            columns = np.searchsorted(targets, [b for _, b in mine])
            for (a, b), score in zip(mine, scores[rows, columns].tolist(), strict=True):
                watched[b][a] = score
    return _lists(parts, k), dict(offers), dict(watched)


def updated_in_place(
    current: dict[int, list[tuple[int, float]]],
    changed: dict[int, dict[int, float]],
    left: set[int],
    k: int,
) -> tuple[Lists, set[int]]:
    """The lists of `current` (product -> its stored list, best first) with the new scores in `changed` (product ->
    {other: its new exact score, offered or rescored}) and without the products in `left` (gone, or whose
    scores changed: their new scores are in `changed`). Returns the lists that stay exact, and the products whose
    list must be computed again: a full list whose new K-th entry scores below the old K-th (an unlisted product
    could now rank above it)."""
    ps, qs, ss, again = [], [], [], set()
    for product in set(current) | set(changed):
        old = current.get(product, [])
        entries = {q: s for q, s in old if q not in left}
        entries.update({q: s for q, s in changed.get(product, {}).items() if np.isfinite(s)})
        ranked = sorted(entries.items(), key=lambda entry: (-entry[1], entry[0]))[:k]
        if len(old) >= k and not (
            len(ranked) == k and (ranked[-1][1] > old[k - 1][1] or tuple(ranked[-1]) == tuple(old[k - 1]))
        ):
            again.add(product)
            continue
        for q, s in ranked:
            ps.append(product), qs.append(q), ss.append(s)
    lists = Lists(*top(np.asarray(ps, np.int64), np.asarray(qs, np.int64), np.asarray(ss, np.float32), k))
    return lists, again


def _lists(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int) -> Lists:
    if not parts:
        return Lists.empty()
    return Lists(*top(*(np.concatenate([part[i] for part in parts]) for i in range(3)), k))
