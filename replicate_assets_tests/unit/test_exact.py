"""The brute force that checks similar products: it must itself catch a wrong list (each check by a double loop)."""

import types

import numpy as np

from replicate_assets.testing.exact import brute_force, wrong_lists


def small_catalogue():
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((60, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    products = np.repeat(np.arange(1, 31), 2)
    return types.SimpleNamespace(vectors=vectors, products=products, url_hashes=[None] * 60)


def by_loops(images, product, k):
    """Every other product's best image pair, by plain loops: (other, score) best first."""
    scores = {}
    for i, p in enumerate(images.products.tolist()):
        for j, q in enumerate(images.products.tolist()):
            if p == product and q != product:
                scores[q] = max(scores.get(q, -2.0), float(images.vectors[i] @ images.vectors[j]))
    return sorted(scores.items(), key=lambda item: -item[1])[:k]


def test_the_brute_force_agrees_with_loops_and_flags_every_kind_of_wrong_list():
    images = small_catalogue()
    truth = {p: by_loops(images, p, 5) for p in range(1, 31)}
    found, _ = brute_force(images, list(truth), 5)
    assert found == {p: [q for q, _ in listed] for p, listed in truth.items()}
    assert wrong_lists(truth, images, list(truth), 5) == []
    worse = dict(truth)
    outsider = by_loops(images, 1, 8)[7]
    worse[1] = truth[1][:4] + [outsider]  # a real score, but not among the best 5
    worse[2] = truth[2][:4] + [(truth[2][4][0], truth[2][4][1] + 0.01)]  # a wrong score
    worse[3] = truth[3][:4] + [(3, 1.0)]  # itself
    worse[4] = truth[4][:4]  # one short
    assert [problem.split(":")[0] for problem in wrong_lists(worse, images, list(truth), 5)] == [
        "product 1",
        "product 2",
        "product 3",
        "product 4",
    ]
