"""The code location: assets, checks, sensors and resources, built from the settings when Dagster loads it.

Nothing here runs at import. Dagster calls `defs()` (a `@dg.definitions` function) when it loads the code
location; a bad setting then stops the load with one line naming the variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg

from replicate_assets.defs.embeddings.assets import build_assets
from replicate_assets.defs.embeddings.checks import build_checks
from replicate_assets.defs.embeddings.sensors import build_sensors
from replicate_assets.defs.export import ParquetFiles, build_export
from replicate_assets.defs.partitions import daily_partitions
from replicate_assets.defs.resources import (
    EmbeddingPolicy,
    ProgressLog,
    ReplicateResource,
    ShopDatabase,
    SimilarityOptions,
)
from replicate_assets.defs.similarity.assets import ASSETS as SIMILARITY_ASSETS
from replicate_assets.defs.similarity.checks import CHECKS as SIMILARITY_CHECKS
from replicate_assets.settings import Settings, SettingsError

STOPPED = dg.DefaultSensorStatus.STOPPED


def secret(name: str, environ: Mapping[str, str], default: Any = None) -> Any:
    """A secret setting as a `dg.EnvVar` (resolved in the run worker, shown by name in the UI), or `default`."""
    return dg.EnvVar(name) if environ.get(name, "").strip() else default


def resources_for(settings: Settings, environ: Mapping[str, str] = os.environ) -> dict[str, dg.ConfigurableResource]:
    return {
        "shop": ShopDatabase(
            url=secret("DATABASE_URL", environ, settings.database_url),
            image_base_url=settings.image_base_url,
            path_column=settings.image_path_column,
            created_at_column=settings.image_created_at_column,
            updated_at_column=settings.image_updated_at_column,
        ),
        "replicate": ReplicateResource(
            api_token=secret("REPLICATE_API_TOKEN", environ),
            base_url=settings.replicate_base_url,
            model=settings.replicate_model,
            max_in_flight=settings.max_in_flight,
            max_predictions_per_minute=settings.max_predictions_per_minute,
            batch_size=settings.batch_size,
            prediction_timeout_seconds=settings.prediction_timeout_seconds,
        ),
        "policy": EmbeddingPolicy(
            chunk_size=settings.chunk_size,
            max_attempts=settings.max_attempts,
            retry_delay_seconds=settings.retry_delay_seconds,
        ),
        "progress_log": ProgressLog(path=settings.embeddings_log),
        "similarity": SimilarityOptions(
            k=settings.similar_products_k,
            index_folder=settings.similarity_index_dir,
            max_lag_minutes=settings.similarity_max_lag_minutes,
        ),
        "parquet_files": ParquetFiles(base_path=settings.embeddings_export_dir),
    }


def build_definitions(settings: Settings, environ: Mapping[str, str] = os.environ) -> dg.Definitions:
    partitions = daily_partitions(settings.start_date)
    return dg.Definitions(
        assets=[*build_assets(partitions, settings.retry_delay_seconds), *SIMILARITY_ASSETS, build_export(partitions)],
        asset_checks=[*build_checks(partitions), *SIMILARITY_CHECKS],
        sensors=[
            *build_sensors(partitions, settings.sensor_interval_seconds),
            # Runs the similarity assets when a parent's data is newer (their automation conditions); starts
            # stopped, like every sensor here. Evaluated in the code location: the condition reads the instance.
            dg.AutomationConditionSensorDefinition(
                "similarity_automation",
                target=dg.AssetSelection.groups("similarity"),
                default_status=STOPPED,
                use_user_code_server=True,
                minimum_interval_seconds=max(settings.sensor_interval_seconds // 2, 1),
            ),
        ],
        # The chain runs one step after another: a process per step (Dagster's default) only adds ~2 s of
        # start-up per step and check (BENCHMARKS.md item 7).
        executor=dg.in_process_executor,
        resources=resources_for(settings, environ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        # One line that names the variable and the fix. A code server (`dagster dev`, the webserver) raises it
        # too, so the UI shows it where the location failed to load; a command (`dagster asset materialize`)
        # prints it and exits, without a traceback.
        print(f"error: {err}", file=sys.stderr, flush=True)
        if sys.argv[1:3] == ["api", "grpc"]:
            raise
        raise SystemExit(2) from None
    return build_definitions(settings)
