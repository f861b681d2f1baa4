"""Why the search index is faiss's inverted file with 8-bit vectors: the candidates measured side by side.

    .venv/bin/pip install usearch hnswlib      # the other candidates (not dependencies of the project)
    .venv/bin/python benchmarks/index_choice.py [--size 100000]

Each candidate indexes the same clustered 768-d unit vectors (benchmarks/similarity_cases.py) and answers the same
1,000 held-out queries with 2 threads; recall@10 is against exact search with numpy. A candidate whose library is
missing is reported as such.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from similarity_cases import clustered, unit

D, K, THREADS = 768, 10, 2


def faiss_ivf_sq8(vectors: np.ndarray):
    from replicate_assets.similarity.index import inverted_file

    index = inverted_file(D, len(vectors))
    index.train(vectors[np.random.default_rng(0).choice(len(vectors), 50 * index.nlist, replace=False)])
    index.add(vectors)
    return lambda queries: index.search(queries, K)[1], f"{index.nlist} lists, {index.nprobe} probed"


def faiss_hnsw(vectors: np.ndarray):
    import faiss

    index = faiss.IndexHNSWFlat(D, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    index.add(vectors)
    index.hnsw.efSearch = 64
    return lambda queries: index.search(queries, K)[1], "M 32, ef 64"


def usearch_hnsw(vectors: np.ndarray):
    from usearch.index import Index

    index = Index(ndim=D, metric="ip", dtype="f16", connectivity=16, expansion_add=128, expansion_search=128)
    index.add(np.arange(len(vectors)), vectors, threads=THREADS)
    return lambda queries: index.search(queries, K, threads=THREADS).keys, "f16, M 16, ef 128"


def hnswlib_hnsw(vectors: np.ndarray):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=D)
    index.init_index(max_elements=len(vectors), ef_construction=128, M=16)
    index.add_items(vectors, num_threads=THREADS)
    index.set_ef(64)
    return lambda queries: index.knn_query(queries, k=K, num_threads=THREADS)[0], "M 16, ef 64"


CANDIDATES = {
    "faiss IVF, 8-bit (chosen)": faiss_ivf_sq8,
    "faiss HNSW": faiss_hnsw,
    "usearch HNSW": usearch_hnsw,
    "hnswlib HNSW": hnswlib_hnsw,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    size = parser.parse_args().size
    import faiss

    faiss.omp_set_num_threads(THREADS)
    vectors = np.ascontiguousarray(unit(clustered(0, size, max(1, size // 100))), dtype=np.float32)
    queries = np.ascontiguousarray(unit(clustered(10_000_001, 1_000, max(1, size // 100))), dtype=np.float32)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    print(f"{size:,} clustered 768-d unit vectors, 1,000 queries, {THREADS} threads, recall@{K} against numpy")
    print("| index | setting | build s | recall@10 | queries/s |\n|---|---|---|---|---|")
    for name, make in CANDIDATES.items():
        try:
            started = time.perf_counter()
            search, setting = make(vectors)
            built = time.perf_counter() - started
        except ImportError as err:
            print(f"| {name} | not installed ({err.name}) | | | |")
            continue
        search(queries[:50])
        started = time.perf_counter()
        found = search(queries)
        qps = len(queries) / (time.perf_counter() - started)
        hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True))
        print(f"| {name} | {setting} | {built:.0f} | {hits / truth.size:.3f} | {qps:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
