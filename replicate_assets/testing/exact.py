"""An exact reference for similar products, and CLIP-like vectors to test it on: for tests and benchmarks.

`brute_force` shares no code with `replicate_assets.similarity`: it is what a reviewer would write to check the
lists (each product's images against every image, in blocks; the best pair per other product; itself and
products showing the very same image left out).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np


def brute_force(images, products: list[int], k: int) -> tuple[dict[int, list[int]], float]:
    """The exact top `k` other products of each of `products` (best first), and the seconds per product.

    `images` has `products` (one per image), unit `vectors` and `url_hashes` (None where unknown); products
    sharing a URL hash or a byte-identical vector are duplicates, never listed."""
    started = time.perf_counter()
    found = {}
    for product, (catalogue, scores) in _Scores(images).of(products):
        top = np.argsort(-scores, kind="stable")[:k]
        found[product] = [int(catalogue[i]) for i in top if np.isfinite(scores[i])]
    return found, (time.perf_counter() - started) / max(1, len(products))


def wrong_lists(lists: dict[int, list[tuple[int, float]]], images, products: list[int], k: int, atol: float = 1e-5):
    """What is wrong with the stored `lists` (product -> [(other, score)], best first) of `products`, by the brute
    force: an entry whose score is not its true one, a product that may not be listed, or a list whose scores are
    not the best `k` (equal scores within `atol` may come in either order: float rounding decides among ties)."""
    problems = []
    for product, (catalogue, scores) in _Scores(images).of(products):
        listed = lists.get(product, [])
        best = np.sort(scores[np.isfinite(scores)])[::-1][:k]
        at = np.searchsorted(catalogue, [q for q, _ in listed])
        true = [
            float(scores[i]) if i < len(catalogue) and catalogue[i] == q else None
            for i, (q, _) in zip(at, listed, strict=True)
        ]
        if any(t is None or not np.isfinite(t) or abs(t - s) > atol for t, (_, s) in zip(true, listed, strict=True)):
            problems.append(f"product {product}: {listed} has entries that are not its true scores ({true})")
        elif len(listed) != len(best) or not np.allclose([s for _, s in listed], best, atol=atol):
            problems.append(f"product {product}: scores {[s for _, s in listed]} are not the best {best.tolist()}")
    return problems


class _Scores:
    """Each product's best-pair score against every product (itself and its duplicates at -inf)."""

    def __init__(self, images):
        self.vectors = np.asarray(images.vectors, dtype=np.float32)
        self.owners = np.asarray(images.products)
        self.order = np.argsort(self.owners, kind="stable")
        ranked = self.owners[self.order]
        self.firsts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        self.catalogue = ranked[self.firsts]
        self.same_image: dict[int, set[int]] = {}
        for keys in (list(images.url_hashes), [hashlib.sha256(v.tobytes()).digest() for v in self.vectors]):
            sharing: dict[object, set[int]] = {}
            for key, owner in zip(keys, self.owners.tolist(), strict=True):
                if key:
                    sharing.setdefault(key, set()).add(owner)
            for group in sharing.values():
                for owner in group:
                    self.same_image.setdefault(owner, set()).update(group)

    def of(self, products):
        vectors = self.vectors
        for product in products:
            mine = vectors[self.owners == product]
            best = np.full(len(vectors), -np.inf, dtype=np.float32)
            for lo in range(0, len(vectors), 65536):
                best[lo : lo + 65536] = (mine @ vectors[lo : lo + 65536].T).max(axis=0)
            per_product = np.maximum.reduceat(best[self.order], self.firsts)
            excluded = list(self.same_image.get(product, set()) | {product})
            per_product[np.isin(self.catalogue, excluded)] = -np.inf
            yield product, (self.catalogue, per_product)


def recall(lists: dict[int, list[int]], truth: dict[int, list[int]]) -> float:
    """recall@k of `lists` on the products of `truth`."""
    hit = sum(len(set(lists.get(p, [])) & set(exact)) for p, exact in truth.items())
    return hit / max(1, sum(map(len, truth.values())))


BLOCK = 10_000  # products generated together: any range of products gives the same vectors


def clip_like(
    products: int,
    images_per_product: int = 2,
    categories: int = 50,
    dimensions: int = 768,
    seed: int = 3,
    first: int = 1,
    version: int = 0,
):
    """Unit vectors shaped like CLIP's image embeddings: a strong direction every image shares (unrelated images
    score about 0.5), a category each product belongs to, the product's own look, and its images as variants of
    it; every 50th product shows a near-copy of another product's image. Returns (products, vectors): one row per
    image of products `first`..`first + products - 1`, the same vectors whichever range asks for them.
    `version` > 0: the same products photographed again (their look kept, new variants): changed images."""
    shared_rng = np.random.default_rng(seed)
    shared, kinds = _directions(shared_rng, 1, dimensions)[0], _directions(shared_rng, categories, dimensions)
    owners, parts = [], []
    last = first + products - 1
    for block in range((first - 1) // BLOCK, (last - 1) // BLOCK + 1):
        rng = np.random.default_rng([seed, block])
        looks = _directions(rng, BLOCK, dimensions)
        category = rng.integers(0, categories, BLOCK)
        variants = _directions(np.random.default_rng([seed, block, version]), BLOCK * images_per_product, dimensions)
        owner = np.repeat(np.arange(block * BLOCK + 1, (block + 1) * BLOCK + 1), images_per_product)
        local = owner - block * BLOCK - 1
        vectors = 0.7 * shared + 0.45 * kinds[category[local]] + 0.4 * looks[local] + 0.15 * variants
        copies = np.arange(0, len(owner), 50 * images_per_product)
        noise = _directions(np.random.default_rng([seed, block, version, 1]), len(copies), dimensions)
        vectors[copies] = vectors[(copies + 7 * images_per_product) % len(owner)] + 0.01 * noise
        keep = (owner >= first) & (owner <= last)
        owners.append(owner[keep])
        parts.append((vectors[keep] / np.linalg.norm(vectors[keep], axis=1, keepdims=True)).astype(np.float32))
    return np.concatenate(owners).astype(np.int64), np.concatenate(parts)


def _directions(rng, count: int, dimensions: int) -> np.ndarray:
    raw = rng.standard_normal((count, dimensions), dtype=np.float32)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)
