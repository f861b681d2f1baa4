"""The code location: assets, checks, sensors and resources, configured from the environment (see README)."""

import os

import dagster as dg

from replicate_assets.assets import SETTINGS, clip_embeddings, embedding_table, product_images
from replicate_assets.catalogue import ShopDatabase
from replicate_assets.checks import embedding_dimensions, failed_images, products_without_embeddings
from replicate_assets.progress_log import ProgressLog
from replicate_assets.replicate import ReplicateClient
from replicate_assets.sensors import missing_embeddings_sensor, new_product_images_sensor

# The token stays an EnvVar: Dagster resolves it in the run worker and never shows its value.
token = dg.EnvVar("REPLICATE_API_TOKEN") if os.environ.get("REPLICATE_API_TOKEN") else None

defs = dg.Definitions(
    assets=[product_images, clip_embeddings, embedding_table],
    asset_checks=[products_without_embeddings, embedding_dimensions, failed_images],
    sensors=[new_product_images_sensor, missing_embeddings_sensor],
    # The chain runs one step after another: a process per step (Dagster's default) only adds ~2 s of
    # start-up per step and check (BENCHMARKS.md item 7).
    executor=dg.in_process_executor,
    resources={
        "shop": ShopDatabase(url=SETTINGS.database_url, image_base_url=SETTINGS.image_base_url),
        "replicate": ReplicateClient.from_settings(SETTINGS, api_token=token),
        "progress_log": ProgressLog(path=SETTINGS.embeddings_log),
    },
)
