"""Vectors fit for search: CLIP embeddings as L2-normalised float32, stored as bytes, compared by digest.

CLIP puts image and text vectors in one space, but cosine similarity needs unit vectors, and not every model
returns them (krthr/clip-embeddings gives raw features). All search math here works on unit vectors of one model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

DTYPE = np.float32


def parse(raw: Any) -> np.ndarray:
    """An embedding as stored (a JSON array, as text or already parsed) as a float32 vector."""
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode()
    if isinstance(raw, str):
        raw = json.loads(raw)
    return np.asarray(raw, dtype=DTYPE)


def normalised(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to unit length; raises ValueError for a zero or non-finite vector."""
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the vector has no direction (zero, NaN or infinite values)")
    return (vector / norm).astype(DTYPE)


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (in place when the matrix is float32)."""
    matrix = np.ascontiguousarray(matrix, dtype=DTYPE)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    matrix /= norms
    return matrix


def to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=DTYPE).tobytes()


def from_bytes(blobs: Sequence[bytes], dimensions: int) -> np.ndarray:
    """Stored vectors as one (n, dimensions) float32 matrix (read-only: it shares the joined bytes' memory)."""
    if not blobs:
        return np.zeros((0, dimensions), dtype=DTYPE)
    return np.frombuffer(b"".join(blobs), dtype=DTYPE).reshape(len(blobs), dimensions)


def digest(vector: np.ndarray) -> str:
    """The same for identical vectors (the same image embedded once and reused), different otherwise."""
    return hashlib.sha1(to_bytes(vector)).hexdigest()
