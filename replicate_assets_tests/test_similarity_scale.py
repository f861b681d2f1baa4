"""Similar products above the size where the lists are computed exactly, on CLIP-like vectors (a shared direction,
categories, variants, near-copies), against a brute force that shares no code with the lists
(`replicate_assets.testing.exact`). No database: the lists' math alone, at a size a test can afford."""

import numpy as np

from replicate_assets.similarity.lists import similar_products
from replicate_assets.similarity.neighbours import EXACT_LIMIT, Images
from replicate_assets.similarity.vectors import digest
from replicate_assets.testing.exact import brute_force, clip_like, recall


def test_the_approximate_lists_above_the_exact_size_match_an_independent_reference():
    products, vectors = clip_like(16_000)  # 32,000 images: the inverted-file path
    assert len(vectors) > EXACT_LIMIT
    urls = np.array([None] * len(vectors), dtype=object)
    urls[5] = urls[9] = "https://shop.example/shared.png"  # products 3 and 5 show one image: duplicates, not similar
    images = Images(
        np.arange(1, len(vectors) + 1, dtype=np.int64),
        products,
        vectors,
        np.array([digest(v) for v in vectors], dtype=object),
        urls,
    )
    lists = {p: [q for q, _ in listed] for p, listed in similar_products(images, 20).by_product().items()}
    rng = np.random.default_rng(11)
    sample = sorted({3, 5, *rng.choice(np.unique(products), 300, replace=False).tolist()})
    truth, _ = brute_force(images, sample, 20)
    assert recall(lists, truth) >= 0.98
    assert 5 not in lists[3] and 3 not in lists[5]
    assert all(len(lists[p]) == 20 and p not in lists[p] for p in sample)
