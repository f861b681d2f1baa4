"""The resources every domain shares: the shop database, Replicate, the pipeline's policy, the progress file.

Each is a `dg.ConfigurableResource` filled in `definitions.py` from the settings; secrets (the token, a database
URL with a password) arrive as `dg.EnvVar`, so the UI shows the variable's name, never its value.
"""

import dagster as dg

from replicate_assets.db import Schema, ShopColumns, connect
from replicate_assets.pipeline.progress_file import ProgressFile
from replicate_assets.replicate import ClientOptions, ModelSpec, ReplicateClient, model_spec
from replicate_assets.settings import DEFAULT_INDEX_DIR, NUMBERS

CLIENT_DEFAULTS = ClientOptions()


class ShopDatabase(dg.ConfigurableResource):
    """The shop's database (DATABASE_URL), its column names, and how relative image paths become URLs."""

    url: str
    image_base_url: str | None = None
    path_column: str = "path"
    created_at_column: str = "created_at"
    updated_at_column: str = "updated_at"

    def schema(self, create: bool = True) -> Schema:
        """The shop's tables and ours; raises CatalogueError naming a missing table or column."""
        columns = ShopColumns(self.path_column, self.created_at_column, self.updated_at_column)
        return connect(self.url, columns, create=create)


class EmbeddingPolicy(dg.ConfigurableResource):
    """How images are worked through: one value for assets, checks and sensors (a run may override it)."""

    chunk_size: int = NUMBERS["chunk_size"].field()
    max_attempts: int = NUMBERS["max_attempts"].field()
    retry_delay_seconds: float = NUMBERS["retry_delay_seconds"].field(float)


class SimilarityOptions(dg.ConfigurableResource):
    """How similar products and search work (SIMILAR_PRODUCTS_K, SIMILARITY_INDEX_DIR, SIMILARITY_MAX_LAG_MINUTES)."""

    k: int = NUMBERS["similar_products_k"].field()
    index_folder: str = DEFAULT_INDEX_DIR
    max_lag_minutes: int = NUMBERS["similarity_max_lag_minutes"].field()


class ProgressLog(dg.ConfigurableResource):
    """The plain log file in the Laravel version's format (REPLICATE_EMBEDDINGS_LOG)."""

    path: str

    def file(self) -> ProgressFile:
        return ProgressFile(self.path)


class ReplicateResource(dg.ConfigurableResource):
    """Replicate's API for one CLIP model (REPLICATE_* settings); `get_client()` builds a client per step."""

    api_token: str | None = None
    base_url: str = CLIENT_DEFAULTS.base_url
    model: str = CLIENT_DEFAULTS.model
    max_in_flight: int = NUMBERS["max_in_flight"].field()
    max_predictions_per_minute: int = NUMBERS["max_predictions_per_minute"].field()
    batch_size: int = NUMBERS["batch_size"].field()
    prediction_timeout_seconds: float = NUMBERS["prediction_timeout_seconds"].field(float)
    sync_wait_seconds: int = CLIENT_DEFAULTS.sync_wait_seconds
    read_timeout_seconds: float = CLIENT_DEFAULTS.read_timeout_seconds
    max_request_attempts: int = CLIENT_DEFAULTS.max_request_attempts
    backoff_seconds: float = CLIENT_DEFAULTS.backoff_seconds

    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.model)

    def get_client(self) -> ReplicateClient:
        """A new client (session, limiter, thread pool, counters) for one step."""
        fields = {name: getattr(self, name) for name in ClientOptions.__dataclass_fields__}
        return ReplicateClient(self.api_token, ClientOptions(**fields))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Runs when a run starts, before any step waits for the `replicate_api` pool: a run that died holding
        # the pool's slot must not block this one (see runs.py).
        from replicate_assets.defs.runs import guard_run

        if context.dagster_run is not None and context.instance is not None:
            guard_run(context.instance, context.dagster_run.run_id, context.log)
