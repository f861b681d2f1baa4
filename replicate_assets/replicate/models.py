"""The CLIP models on Replicate, how to call them, and how to read what they answer.

Pure functions and small types: no HTTP here, so each is tested without a server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import Any

from replicate_assets.replicate.errors import ReplicateConfigError

DIMENSIONS = 768
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
URL_LINE = re.compile(r"^https?://")  # clip-features' own test: a line that matches is an image


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to call one CLIP model and read its output."""

    name: str
    version: str | None  # None: an official model, called through its model path
    batched: bool  # takes many newline-separated inputs per prediction
    usd_per_second: float  # the hardware's price, for cost estimates

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name

    def create_path(self) -> str:
        return "/predictions" if self.version else f"/models/{self.name}/predictions"

    def create_body(self, inputs: Sequence[str], field: str = "image") -> dict[str, Any]:
        """The create request's body for image URLs (or texts, with field="text")."""
        if self.batched:
            body: dict[str, Any] = {"input": {"inputs": "\n".join(inputs)}}
        else:
            body = {"input": {field: inputs[0]}}
        if self.version:
            body["version"] = self.reference
        return body

    def inputs_of(self, prediction_input: Any) -> list[str]:
        """The image URLs (or texts) a prediction's input holds, in order."""
        if not isinstance(prediction_input, dict):
            return []
        if self.batched:
            text = prediction_input.get("inputs")
            return [line for line in text.split("\n") if line.strip()] if isinstance(text, str) else []
        value = prediction_input.get("image") or prediction_input.get("text")
        return [value] if isinstance(value, str) else []

    def made(self, prediction: Prediction) -> bool:
        """Whether `prediction` was made by this model (and version), as the list endpoint reports it."""
        if self.version:
            return prediction.version == self.version or prediction.version == self.reference
        return prediction.model == self.name


MODELS = {
    "openai/clip": ModelSpec("openai/clip", None, batched=False, usd_per_second=0.000975),  # L40S
    "andreasjansson/clip-features": ModelSpec(
        "andreasjansson/clip-features",
        "75b33f253f7714a281ad3e9b28f63e3232d583716ef6718f2e46641077ea040a",
        batched=True,
        usd_per_second=0.000225,  # T4
    ),
    "krthr/clip-embeddings": ModelSpec(
        "krthr/clip-embeddings",
        "1c0371070cb827ec3c7f2f28adcdde54b50dcd239aa6faea0bc98b174ef03fb4",
        batched=False,
        usd_per_second=0.000225,  # hardware not published; priced as a T4 (inferred)
    ),
}


def model_spec(model: str) -> ModelSpec:
    """Parse REPLICATE_MODEL (`owner/name` or `owner/name:version`); raises ReplicateConfigError if unknown."""
    name, _, version = model.partition(":")
    spec = MODELS.get(name)
    if spec is None:
        raise ReplicateConfigError(
            f"REPLICATE_MODEL={model!r} is not a supported CLIP model: use one of {', '.join(MODELS)}"
        )
    if version and not re.fullmatch(r"[0-9a-f]{64}", version):
        raise ReplicateConfigError(
            f"REPLICATE_MODEL={model!r}: a version is 64 hexadecimal characters (owner/name:<version>)"
        )
    return dataclasses.replace(spec, version=version) if version else spec


@dataclasses.dataclass
class ImageOutcome:
    """What became of one image URL: an embedding, a failure of the image, or nothing yet (left pending)."""

    url: str
    embedding: list[float] | None = None
    error: str | None = None
    left_pending: bool = False  # not an attempt of the image: the run stopped, or Replicate was unavailable
    predict_time: float = 0.0  # seconds billed, this image's share
    prediction_id: str | None = None
    adopted: bool = False  # taken from a prediction an earlier attempt created, not created now

    @property
    def ok(self) -> bool:
        return self.embedding is not None


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A prediction document as the API returns it, read tolerantly (fields may be missing or null)."""

    raw: dict[str, Any]

    @property
    def id(self) -> str | None:
        value = self.raw.get("id")
        return value if isinstance(value, str) and value else None

    @property
    def status(self) -> str | None:
        return self.raw.get("status")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def model(self) -> str | None:
        return self.raw.get("model")

    @property
    def version(self) -> str | None:
        return self.raw.get("version")

    @property
    def input(self) -> Any:
        return self.raw.get("input")

    @property
    def get_url(self) -> str | None:
        urls = self.raw.get("urls")
        return urls.get("get") if isinstance(urls, dict) else None

    @property
    def created_at(self) -> dt.datetime | None:
        return parse_timestamp(self.raw.get("created_at"))

    @property
    def predict_time(self) -> float:
        metrics = self.raw.get("metrics")
        value = metrics.get("predict_time") if isinstance(metrics, dict) else None
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0

    @property
    def logs(self) -> str:
        value = self.raw.get("logs")
        return value if isinstance(value, str) else ""

    def failure(self) -> str:
        """Why a terminal prediction that did not succeed gave nothing."""
        if self.status in ("canceled", "aborted"):
            return f"prediction {self.id} was {self.status}"
        return str(self.raw.get("error") or f"prediction {self.id} ended {self.status}")


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Replicate's timestamps (3 to 9 fractional digits, `Z`) as aware UTC datetimes; None if unreadable."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", value.strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        return dt.datetime.fromisoformat(f"{base}.{micros}{zone}").astimezone(dt.UTC)
    except ValueError:
        return None


def load_failures(prediction: Prediction, urls: Sequence[str]) -> dict[str, str]:
    """The URLs of a failed prediction that the model could not load, each with a message that says so.

    clip-features logs `Failed to load URL: why` for each, then fails with the predictor's raw text (a KeyError
    that quotes one URL, or a NameError when no image loaded at all); both are kept in the message.
    """
    raw = prediction.failure()
    found: dict[str, str] = {}
    for line in prediction.logs.splitlines():
        url, _, why = line.removeprefix("Failed to load ").partition(": ")
        if line.startswith("Failed to load ") and url in urls:
            found[url] = f"the model could not load the image {url}: {why} (model error: {raw})"
    for url in urls:
        if url not in found and re.search(re.escape(url) + r"(?=$|[\s:'\",)])", raw):
            found[url] = f"the model could not load the image {url} (model error: {raw})"
    return found


def read_output(prediction: Prediction, urls: Sequence[str], spec: ModelSpec) -> list[ImageOutcome]:
    """Map a succeeded prediction's output back to its URLs, validating every vector."""
    output = prediction.raw.get("output")
    if output is None:
        why = "its output was removed (data_removed)" if prediction.raw.get("data_removed") else "output is null"
        return [ImageOutcome(u, error=f"malformed output: {why}") for u in urls]
    if spec.batched:
        by_input: dict[str, Any] = {}
        if isinstance(output, list):
            for item in output:
                if isinstance(item, dict) and isinstance(item.get("input"), str):
                    by_input[item["input"]] = item.get("embedding")
        vectors = [by_input.get(u) for u in urls]
    else:
        vectors = [output.get("embedding") if isinstance(output, dict) else None] * len(urls)
    outcomes = []
    for url, vector in zip(urls, vectors, strict=True):
        problem = vector_problem(vector)
        outcomes.append(
            ImageOutcome(url, error=f"malformed output: {problem}")
            if problem
            else ImageOutcome(url, embedding=[float(x) for x in vector])
        )
    return outcomes


def vector_problem(vector: Any, dimensions: int = DIMENSIONS) -> str | None:
    """Why `vector` is not a usable CLIP embedding, or None when it is."""
    if not isinstance(vector, list):
        return f"expected a list of {dimensions} floats, got {type(vector).__name__}"
    if len(vector) != dimensions:
        return f"expected {dimensions} values, got {len(vector)}"
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in vector):
        return "the embedding holds values that are not numbers"
    if not all(math.isfinite(x) for x in vector):
        return "the embedding holds NaN or infinite values"
    if not any(vector):
        return "the embedding is all zeros"
    return None
