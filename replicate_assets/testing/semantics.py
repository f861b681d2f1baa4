"""A stand-in for CLIP's semantics, for the emulator and the sample shop. It is not CLIP.

The sample shop's images are squares in the colour of their product's category (a red leather bag is red). The
emulator reads an image's bytes: when they are one of those PNGs, its embedding leans towards the category's
vector (the sum of its words' vectors), so images of one category are near each other; a text's embedding is the
sum of its words' vectors, so "red bag" is near red leather bags. Anything else (any other bytes) gets a vector
that depends on the bytes alone, as before. Every value is a deterministic function of its input.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib

import numpy as np

from replicate_assets.replicate import DIMENSIONS

CATEGORIES: dict[str, tuple[int, int, int]] = {
    "red leather bag": (200, 30, 40),
    "blue running shoe": (30, 60, 200),
    "green ceramic mug": (40, 160, 70),
    "yellow rain jacket": (230, 200, 40),
    "black wool hat": (25, 25, 25),
    "white desk lamp": (235, 235, 235),
    "brown leather wallet": (120, 70, 30),
    "pink silk scarf": (230, 120, 170),
}
CLOSE = 45.0  # an image whose mean colour is this close to a category's colour belongs to it
SCALE = 9.0  # CLIP's raw features are not unit vectors: neither are these
WORD = re.compile(r"[a-z]+")


def _gaussian(seed_text: bytes) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(seed_text).digest()[:8], "big")
    return np.random.default_rng(seed).standard_normal(DIMENSIONS)


def word_vector(word: str) -> np.ndarray:
    vector = _gaussian(b"word:" + word.encode())
    return vector / np.linalg.norm(vector)


def words_vector(text: str) -> np.ndarray | None:
    """The normalised sum of the text's words' vectors (None for a text without letters)."""
    words = WORD.findall(text.lower())
    if not words:
        return None
    total = sum(word_vector(w) for w in words)
    return total / np.linalg.norm(total)


def category_of(data: bytes) -> str | None:
    """The category of a sample-shop PNG, from its mean colour; None for any other bytes."""
    pixels = _rgb_pixels(data)
    if pixels is None:
        return None
    mean = pixels.reshape(-1, 3).mean(axis=0)
    name, colour = min(CATEGORIES.items(), key=lambda item: np.linalg.norm(mean - np.array(item[1])))
    return name if np.linalg.norm(mean - np.array(colour)) <= CLOSE else None


def image_embedding(data: bytes) -> list[float]:
    """768 floats, the same for the same bytes; near each other for images of one category."""
    noise = _gaussian(data)  # the bytes' own vector: all an image without a category has
    category = category_of(data)
    if category is None:
        return [round(float(x), 6) for x in noise]
    vector = 0.85 * words_vector(category) + 0.5 * noise / np.linalg.norm(noise)
    return [round(float(x), 6) for x in SCALE * vector]


def text_embedding(text: str) -> list[float]:
    """768 floats for a text: near the images of the categories its words name."""
    words = words_vector(text)
    noise = _gaussian(b"text:" + text.encode())
    noise /= np.linalg.norm(noise)
    vector = noise if words is None else 0.9 * words + 0.3 * noise
    return [round(float(x), 6) for x in SCALE * vector]


def _rgb_pixels(data: bytes) -> np.ndarray | None:
    """The pixels of an 8-bit RGB PNG without row filters (what `sample_shop.png` writes); None otherwise."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    position, header, idat = 8, None, b""
    try:
        while position < len(data):
            (length,) = struct.unpack(">I", data[position : position + 4])
            kind = data[position + 4 : position + 8]
            body = data[position + 8 : position + 8 + length]
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat += body
            position += 12 + length
        if header is None:
            return None
        width, height, depth, colour, _, _, _ = header
        if depth != 8 or colour != 2:
            return None
        raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    except (struct.error, zlib.error, ValueError):
        return None
    if raw[:, 0].any():  # filtered rows: not ours
        return None
    return raw[:, 1:].reshape(height, width, 3).astype(np.float64)
