"""The embeddings out of the shop database for data teams: `embeddings_parquet`, each day's rows of
`product_embeddings` as a pandas DataFrame, stored as Parquet (one file per day) by `ParquetFiles` under
EMBEDDINGS_EXPORT_DIR: a folder, or any fsspec location (UPath). Its own group, `export`: no sensor or automation
runs it; select it (`dagster asset materialize --select embeddings_parquet --partition DAY`) or add it to a job."""

import dagster as dg
import numpy as np
import pandas as pd
from upath import UPath

from replicate_assets.db.embeddings import EmbeddingStore
from replicate_assets.defs.embeddings.assets import fix_first, window_of
from replicate_assets.defs.resources import ReplicateResource, ShopDatabase

GROUP = "export"
COLUMNS = ["product_id", "product_image_id", "model", "embedding", "created_at", "updated_at"]


class _ParquetIOManager(dg.UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        with path.open("wb") as file:
            obj.to_parquet(file, index=False)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        with path.open("rb") as file:
            return pd.read_parquet(file)


class ParquetFiles(dg.ConfigurableIOManagerFactory):
    """DataFrames as Parquet files under `base_path` (`<base_path>/<asset>/<partition>.parquet`)."""

    base_path: str

    def create_io_manager(self, context: dg.InitResourceContext) -> _ParquetIOManager:
        return _ParquetIOManager(base_path=UPath(self.base_path))


def build_export(partitions: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=partitions,
        deps=["embedding_table"],
        group_name=GROUP,
        io_manager_key="parquet_files",
        kinds={"pandas", "parquet"},
        description="Each day's product_embeddings (images created that day, UTC) as Parquet: product_id, "
        "product_image_id, model, embedding (float32 list), created_at, updated_at. Read it with "
        "pandas.read_parquet or DuckDB. Optional: no sensor runs it.",
    )
    def embeddings_parquet(
        context: dg.AssetExecutionContext, shop: ShopDatabase, replicate: ReplicateResource
    ) -> pd.DataFrame:
        with fix_first():
            schema, model = shop.schema(), replicate.spec.reference
        rows, skipped = [], 0
        for page in EmbeddingStore(schema).published(window_of(context), model):
            for row in page:
                if not isinstance(row.embedding, list):
                    skipped += 1
                    continue
                vector = np.asarray(row.embedding, dtype=np.float32)
                rows.append((row.product_id, row.product_image_id, row.model, vector, row.created_at, row.updated_at))
        if skipped:
            context.log.warning(f"{skipped} rows of product_embeddings hold no JSON array and were left out")
        frame = pd.DataFrame(rows, columns=COLUMNS)
        context.add_output_metadata({"rows": len(frame), "rows_skipped": skipped, "model": model})
        return frame

    return embeddings_parquet
