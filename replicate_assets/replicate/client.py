"""The client for one CLIP model on Replicate: built once per step from its options, shared by its threads."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from replicate_assets.replicate.embedder import Embedder
from replicate_assets.replicate.errors import ReplicateError
from replicate_assets.replicate.models import URL_LINE, ImageOutcome, model_spec, read_output
from replicate_assets.replicate.predictions import Predictions
from replicate_assets.replicate.ratelimit import CreateLimiter
from replicate_assets.replicate.transport import Stats, Transport

API_ROOT = "https://api.replicate.com/v1"
DEFAULT_MODEL = "openai/clip"


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """How the client talks to Replicate; the defaults are the README's."""

    base_url: str = API_ROOT
    model: str = DEFAULT_MODEL
    max_in_flight: int = 16
    max_predictions_per_minute: int = 600
    batch_size: int = 50
    prediction_timeout_seconds: float = 120.0
    sync_wait_seconds: int = 5
    read_timeout_seconds: float = 15.0  # beyond the sync wait, for creates
    max_request_attempts: int = 4
    backoff_seconds: float = 1.0


class ReplicateClient:
    """Replicate's HTTP API for one CLIP model. The token is used in the Authorization header only.

    Raises ReplicateConfigError at once for a missing or malformed token, an unknown model, or plain http to a
    host that is not loopback.
    """

    def __init__(self, api_token: str | None, options: ClientOptions | None = None, **overrides: Any):
        self.options = dataclasses.replace(options or ClientOptions(), **overrides)
        opts = self.options
        self.spec = model_spec(opts.model)
        self.max_in_flight, self.batch_size = opts.max_in_flight, opts.batch_size
        self.stop_event = threading.Event()
        self.stats = Stats()
        self.transport = Transport(
            api_token,
            opts.base_url,
            pool_size=opts.max_in_flight,
            read_timeout=opts.read_timeout_seconds,
            max_attempts=opts.max_request_attempts,
            backoff=opts.backoff_seconds,
            stop=self.stop_event,
            stats=self.stats,
        )
        self.limiter = CreateLimiter(opts.max_predictions_per_minute, self.stop_event)
        self.predictions = Predictions(
            self.transport,
            self.spec,
            self.limiter,
            sync_wait_seconds=opts.sync_wait_seconds,
            timeout_seconds=opts.prediction_timeout_seconds,
        )

    def test_connection(self) -> dict[str, Any]:
        """Check token, model and version without running a prediction: the account and model documents.

        Raises ReplicateConfigError when the version given in REPLICATE_MODEL is not one of the model's.
        """
        account = self.transport.request("GET", "/account").json()
        model = self.transport.request("GET", f"/models/{self.spec.name}").json()
        if self.spec.version:
            self.transport.request("GET", f"/models/{self.spec.name}/versions/{self.spec.version}")
        return {"account": account, "model": model}

    def embed_query(self, text: str | None = None, image: str | None = None) -> list[float]:
        """One text's or one image URL's embedding, for a search (one prediction); raises ReplicateError when
        Replicate refuses it or it fails."""
        field, value = ("text", text) if text is not None else ("image", image)
        if value is None:
            raise ValueError("a query needs a text or an image URL")
        if self.spec.batched and field == "text" and URL_LINE.match(value):
            raise ReplicateError("clip-features reads a line that starts with http(s):// as an image: ask with --image")
        created = self.predictions.create([value], field=field)
        if isinstance(created, ReplicateError):
            raise created
        prediction = created if created.terminal else self.predictions.wait(created)
        if prediction is None or prediction.status != "succeeded":
            why = prediction.failure() if prediction is not None else "the search was stopped"
            raise ReplicateError(f"the query could not be embedded: {why}")
        [outcome] = read_output(prediction, [value], self.spec)
        if not outcome.ok:
            raise ReplicateError(f"the query could not be embedded: {outcome.error}")
        return outcome.embedding

    def embedder(self) -> Embedder:
        return Embedder(self)

    def embed_images(self, urls: Iterable[str]) -> Iterator[ImageOutcome]:
        """Embed `urls` (see `Embedder.embed`), with a pool of threads of its own."""
        with self.embedder() as embedder:
            yield from embedder.embed(urls)
