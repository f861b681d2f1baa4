"""An exact reference for similar products, and CLIP-like vectors to test it on: for tests and benchmarks.

`brute_force` shares no code with `replicate_assets.similarity`: it is what a reviewer would write to check the
lists (each product's images against every image, in blocks; the best pair per other product; itself and
products showing the very same image left out).
"""

from __future__ import annotations

import time

import numpy as np


def brute_force(images, products: list[int], k: int) -> tuple[dict[int, list[int]], float]:
    """The exact top `k` other products of each of `products` (best first), and the seconds per product.

    `images` has `products` (one per image), unit `vectors` and `url_hashes` (None where unknown); products
    sharing a URL hash or a byte-identical vector are duplicates, never listed."""
    started = time.perf_counter()
    vectors, owners = np.asarray(images.vectors, dtype=np.float32), np.asarray(images.products)
    order = np.argsort(owners, kind="stable")
    ranked = owners[order]
    firsts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    catalogue = ranked[firsts]
    same_image: dict[int, set[int]] = {}
    for keys in (list(images.url_hashes), [v.tobytes() for v in vectors]):
        sharing: dict[object, set[int]] = {}
        for key, owner in zip(keys, owners.tolist(), strict=True):
            if key:
                sharing.setdefault(key, set()).add(owner)
        for group in sharing.values():
            for owner in group:
                same_image.setdefault(owner, set()).update(group)
    found = {}
    for product in products:
        mine = vectors[owners == product]
        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        for lo in range(0, len(vectors), 65536):
            best[lo : lo + 65536] = (mine @ vectors[lo : lo + 65536].T).max(axis=0)
        per_product = np.maximum.reduceat(best[order], firsts)
        per_product[np.isin(catalogue, list(same_image.get(product, set()) | {product}))] = -np.inf
        top = np.argsort(-per_product, kind="stable")[:k]
        found[product] = [int(catalogue[i]) for i in top if np.isfinite(per_product[i])]
    return found, (time.perf_counter() - started) / max(1, len(products))


def recall(lists: dict[int, list[int]], truth: dict[int, list[int]]) -> float:
    """recall@k of `lists` on the products of `truth`."""
    hit = sum(len(set(lists.get(p, [])) & set(exact)) for p, exact in truth.items())
    return hit / max(1, sum(map(len, truth.values())))


def clip_like(products: int, images_per_product: int = 2, categories: int = 50, dimensions: int = 768, seed: int = 3):
    """Unit vectors shaped like CLIP's image embeddings: a strong direction every image shares (unrelated images
    score about 0.5), a category each product belongs to, the product's own look, and its images as variants of
    it; every 50th product shows a near-copy of another product's image. Returns (products, vectors): one row per
    image, products numbered from 1."""
    rng = np.random.default_rng(seed)

    def directions(count: int) -> np.ndarray:
        raw = rng.standard_normal((count, dimensions)).astype(np.float32)
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)

    shared, kinds, looks = directions(1)[0], directions(categories), directions(products)
    owner = np.repeat(np.arange(1, products + 1), images_per_product)
    category = rng.integers(0, categories, products)[owner - 1]
    vectors = 0.7 * shared + 0.45 * kinds[category] + 0.4 * looks[owner - 1]
    vectors += 0.15 * directions(len(owner))
    copies = np.arange(0, len(owner), 50 * images_per_product)
    vectors[copies] = vectors[(copies + 7 * images_per_product) % len(owner)] + 0.01 * directions(len(copies))
    return owner.astype(np.int64), (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
