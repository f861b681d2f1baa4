"""The search index: exact below a size where exact is fast enough, an approximate one (faiss) above it.

Why faiss, and which index, was measured on this project's machine (BENCHMARKS.md, "index choice"). The index is
a file per model in the index folder, written whole and renamed into place, so a server never reads half of it;
its image ids and their products travel beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np

from replicate_assets.similarity.neighbours import Images, _faiss, nearest
from replicate_assets.similarity.vectors import DTYPE

EXACT_SEARCH_LIMIT = 20_000  # exact search of more images than this costs over ~2 ms a query: use the index
IVF_PROBES = 16


@dataclasses.dataclass
class SearchIndex:
    """Image vectors of one model, searchable; `kind` is "exact" (vectors in memory) or "ivf" (faiss file)."""

    kind: str
    model: str
    ids: np.ndarray  # product_image_id per position
    products: np.ndarray  # product_id per position
    index: object  # a faiss index
    vectors: np.ndarray | None = None  # kept for exact search and recall measurement

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the `k` nearest images per query (-1 pads), and their cosine similarities."""
        if len(self) == 0:
            return np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), -np.inf, DTYPE)
        sims, positions = self.index.search(np.ascontiguousarray(queries, dtype=DTYPE), min(k, len(self)))
        return positions.astype(np.int64), sims

    def save(self, folder: str | Path) -> Path:
        """Write the index and its ids beside it, atomically; returns the index file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / slug(self.model)
        meta = {"kind": self.kind, "model": self.model, "size": len(self)}
        _faiss().write_index(self.index, str(stem.with_suffix(".faiss.tmp")))
        with stem.with_suffix(".npz.tmp").open("wb") as out:
            np.savez(out, ids=self.ids, products=self.products)
        stem.with_suffix(".json.tmp").write_text(json.dumps(meta))
        for suffix in (".npz", ".json", ".faiss"):  # the index last: its presence means the rest is there
            os.replace(stem.with_suffix(suffix + ".tmp"), stem.with_suffix(suffix))
        return stem.with_suffix(".faiss")

    @classmethod
    def load(cls, folder: str | Path, model: str) -> SearchIndex | None:
        """The index saved for `model`, or None when there is none."""
        stem = Path(folder) / slug(model)
        if not stem.with_suffix(".faiss").exists():
            return None
        meta = json.loads(stem.with_suffix(".json").read_text())
        arrays = np.load(stem.with_suffix(".npz"))
        index = _faiss().read_index(str(stem.with_suffix(".faiss")))
        if hasattr(index, "nprobe"):
            index.nprobe = IVF_PROBES
        return cls(meta["kind"], model, arrays["ids"], arrays["products"], index)


def slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)[:120]


def build(images: Images, model: str, kind: str | None = None) -> SearchIndex:
    """An index over `images`: exact up to EXACT_SEARCH_LIMIT images, else an inverted file with 8-bit vectors."""
    faiss = _faiss()
    kind = kind or ("exact" if len(images) <= EXACT_SEARCH_LIMIT else "ivf")
    dimensions = images.vectors.shape[1] if images.vectors.ndim == 2 else 768
    vectors = np.ascontiguousarray(images.vectors, dtype=DTYPE)
    if kind == "exact":
        index = faiss.IndexFlatIP(dimensions)
    else:
        index = inverted_file(dimensions, len(images))
        rng = np.random.default_rng(0)
        index.train(vectors[rng.choice(len(vectors), min(len(vectors), 50 * index.nlist), replace=False)])
    index.add(vectors)
    return SearchIndex(kind, model, images.ids.copy(), images.products.copy(), index, vectors)


def serving(folder: str | Path | None, model: str, images: Images) -> SearchIndex:
    """The index a search serves over `images`: the saved one when it covers exactly them, else one built now."""
    saved = SearchIndex.load(folder, model) if folder else None
    if saved is not None and len(saved) == len(images) and np.array_equal(np.sort(saved.ids), np.sort(images.ids)):
        return saved
    return build(images, model)


def inverted_file(dimensions: int, size: int):
    """An untrained inverted-file index for `size` unit vectors: 4 x sqrt(size) lists, 8-bit vectors, probing
    IVF_PROBES lists a query (train it on about 50 vectors a list, then add)."""
    faiss = _faiss()
    lists = max(1, int(4 * np.sqrt(size)))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dimensions), dimensions, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.nprobe = IVF_PROBES
    return index


def recall(index: SearchIndex, vectors: np.ndarray, queries: int = 1000, k: int = 10, seed: int = 0) -> float:
    """recall@k of `index` against exact search, on a sample of its own vectors as queries (1.0 for exact)."""
    if index.kind == "exact" or len(vectors) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), min(queries, len(vectors)), replace=False)]
    truth, _ = nearest(sample, vectors, k)
    found, _ = index.search(sample, k)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True))
    return hits / truth.size
