"""Stored embeddings as unit vectors: the page-at-a-time parse gives the very bytes of the row-by-row one."""

import json

import numpy as np

from replicate_assets.similarity.vectors import digest, normalised, parse, parse_many


def texts(count: int, dimensions: int = 768, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [json.dumps([round(float(x), 6) for x in row]) for row in rng.standard_normal((count, dimensions))]


def test_a_page_of_json_arrays_gives_the_row_by_row_bytes_and_digests():
    page = texts(50) + [" [" + ", ".join(["1e-3"] * 768) + "] "]  # spaces, exponents: still JSON
    matrix, usable = parse_many(page, 768)
    assert usable.all()
    for row, text in zip(matrix, page, strict=True):
        one = normalised(parse(text, 768))
        assert row.tobytes() == one.tobytes() and digest(row) == digest(one)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-6)


def test_rows_that_are_no_vectors_are_marked_and_the_others_kept():
    good = texts(4)
    bad = [
        json.dumps([0.5] * 512),  # another model's length
        "not json",
        json.dumps({"a": 1}),
        json.dumps([0.0] * 768),  # no direction
        "[" + ",".join(["1"] * 767) + ",null]",
        "[" + ",".join(["1"] * 767) + ",]",  # 768 commas' worth, one empty
        "[" + ",".join(["1"] * 767) + ",1e400]",  # beyond float32
        "[[1]," + ",".join(["1"] * 766) + "]",  # nested
    ]
    matrix, usable = parse_many(good[:2] + bad + good[2:], 768)
    assert usable.tolist() == [True, True] + [False] * len(bad) + [True, True]
    for row, text in zip(matrix[usable], good, strict=True):
        assert row.tobytes() == normalised(parse(text, 768)).tobytes()
    assert not matrix[~usable].any()


def test_rows_misaligned_in_pairs_are_not_glued_together():
    # one row short of a number, the next one long: the page's count adds up, each row's does not
    short = "[" + ",".join(["0.25"] * 767) + "]"
    long = "[" + ",".join(["0.25"] * 769) + "]"
    matrix, usable = parse_many([short, long, *texts(2)], 768)
    assert usable.tolist() == [False, False, True, True]


def test_already_parsed_lists_and_bytes_are_read_too():
    text = texts(1)[0]
    matrix, usable = parse_many([json.loads(text), text.encode()], 768)
    assert usable.all() and matrix[0].tobytes() == matrix[1].tobytes() == normalised(parse(text, 768)).tobytes()
