"""Replicate's HTTP API, spoken directly with `requests`: no Dagster, no database.

- `client`: `ReplicateClient` and its `ClientOptions`, one per step;
- `transport`: the session, retries and error answers; `errors`: what can go wrong, and what it means;
- `predictions`: create, poll, cancel, and find what was already created; `embedder`: many images at once;
- `ratelimit`: the create limiter that learns an account's limit; `models`: the CLIP models and their outputs.
"""

from replicate_assets.replicate.client import API_ROOT, DEFAULT_MODEL, ClientOptions, ReplicateClient
from replicate_assets.replicate.errors import (
    ReplicateConfigError,
    ReplicateError,
    ReplicateUnavailableError,
    Stopped,
    TransientError,
)
from replicate_assets.replicate.models import (
    DIMENSIONS,
    MODELS,
    ImageOutcome,
    ModelSpec,
    Prediction,
    model_spec,
    vector_problem,
)
from replicate_assets.replicate.predictions import RETENTION

__all__ = [
    "API_ROOT",
    "DEFAULT_MODEL",
    "DIMENSIONS",
    "MODELS",
    "RETENTION",
    "ClientOptions",
    "ImageOutcome",
    "ModelSpec",
    "Prediction",
    "ReplicateClient",
    "ReplicateConfigError",
    "ReplicateError",
    "ReplicateUnavailableError",
    "Stopped",
    "TransientError",
    "model_spec",
    "vector_problem",
]
