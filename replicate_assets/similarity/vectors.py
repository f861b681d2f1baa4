"""Vectors fit for search: CLIP embeddings as L2-normalised float32, stored as bytes, compared by digest.

CLIP puts image and text vectors in one space, but cosine similarity needs unit vectors, and not every model
returns them (krthr/clip-embeddings gives raw features). All search math here works on unit vectors of one model.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

DTYPE = np.float32


def parse(raw: Any, dimensions: int | None = None) -> np.ndarray:
    """An embedding as stored (a JSON array, as text or already parsed) as a float32 vector; ValueError for
    anything else (a row the shop wrote by hand, another model's length)."""
    try:
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode()
        if isinstance(raw, str):
            raw = json.loads(raw)
        vector = np.asarray(raw, dtype=DTYPE)
    except (TypeError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"not a JSON array of numbers ({type(err).__name__})") from None
    if vector.ndim != 1 or (dimensions is not None and len(vector) != dimensions):
        raise ValueError(f"not a vector of {dimensions or 'some'} numbers (shape {vector.shape})")
    return vector


def parse_many(raws: Sequence[Any], dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """Many stored embeddings as unit float32 rows: (matrix, usable), a row of zeros where `usable` is False (not
    a JSON array of `dimensions` numbers, or no direction). JSON texts are parsed in one pass; a page holding
    anything else (parsed lists, a malformed row) falls back to `parse` row by row."""
    matrix = np.zeros((len(raws), dimensions), dtype=DTYPE)
    usable = np.zeros(len(raws), dtype=bool)
    texts = [raw.decode() if isinstance(raw, (bytes, bytearray)) else raw for raw in raws]
    if raws and all(isinstance(t, str) and _flat_array(t, dimensions) for t in texts):
        # one number a line, parsed by pandas' C parser: about 4x json.loads and numpy row by row (BENCHMARKS.md)
        lines = io.StringIO("\n".join(t.strip()[1:-1] for t in texts).replace(",", "\n"))
        try:
            numbers = pd.read_csv(lines, header=None, na_filter=False, engine="c").to_numpy(dtype=DTYPE)
            matrix[:] = numbers.reshape(matrix.shape)
            usable[:] = True
        except (ValueError, TypeError, pd.errors.ParserError):  # not only numbers: row by row below
            pass
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: infinite, and not usable below
        for row, raw in enumerate(texts if not usable.any() else ()):
            try:
                matrix[row] = parse(raw, dimensions)
                usable[row] = True
            except ValueError:
                pass
    for row in np.flatnonzero(usable).tolist():  # row by row, as `normalised` always did: the same bytes, digests
        try:
            matrix[row] = normalised(matrix[row])
        except ValueError:
            matrix[row], usable[row] = 0, False
    return matrix, usable


def _flat_array(text: str, dimensions: int) -> bool:
    """Looks like a JSON array of `dimensions` numbers (the parse proves the rest)."""
    text = text.strip()
    return text[:1] == "[" and text[-1:] == "]" and text.count(",") == dimensions - 1


def normalised(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to unit length; raises ValueError for a zero or non-finite vector."""
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the vector has no direction (zero, NaN or infinite values)")
    return (vector / norm).astype(DTYPE)


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
