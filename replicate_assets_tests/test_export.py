"""What leaves the database for people and data teams: the Parquet export of each day's embeddings, read back and
compared with product_embeddings on every backend, and the sample table product_similarities shows in the UI."""

import datetime as dt
import json
import re

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa
from conftest import DAYS, TODAY, definitions, make_resources, materialize_chain, similarity_run

from replicate_assets.db import engine_for
from replicate_assets.defs.export import ParquetFiles
from replicate_assets.testing.sample_shop import build_sample_shop


def test_each_days_embeddings_as_parquet_read_back_equal_product_embeddings(
    shop_url, image_server, fresh_emulator, tmp_path
):
    build_sample_shop(engine_for(shop_url), image_server, products=20, days=3, today=TODAY)
    resources = make_resources(shop_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    export = definitions().get_assets_def("embeddings_parquet")
    folder = tmp_path / "export"
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        result = dg.materialize(
            [export],
            partition_key=day,
            resources={**resources, "parquet_files": ParquetFiles(base_path=str(folder))},
            instance=instance,
        )
        assert result.success

    with engine_for(shop_url).connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT e.product_id, e.product_image_id, e.model, e.embedding, i.created_at FROM product_embeddings e "
                "JOIN product_images i ON i.id = e.product_image_id"
            )
        ).all()
    assert stored
    for day in DAYS:
        frame = pd.read_parquet(folder / "embeddings_parquet" / f"{day}.parquet")
        assert list(frame.columns) == [
            "product_id",
            "product_image_id",
            "model",
            "embedding",
            "created_at",
            "updated_at",
        ]
        expected = {
            row.product_image_id: row
            for row in stored
            if (
                row.created_at if isinstance(row.created_at, dt.datetime) else dt.datetime.fromisoformat(row.created_at)
            )
            .date()
            .isoformat()
            == day
        }
        assert sorted(frame.product_image_id) == sorted(expected)
        for row in frame.itertuples():
            want = expected[row.product_image_id]
            assert (row.product_id, row.model) == (want.product_id, want.model)
            vector = want.embedding if isinstance(want.embedding, list) else json.loads(want.embedding)
            assert np.array_equal(np.asarray(row.embedding), np.asarray(vector, dtype=np.float32))
            assert len(row.embedding) == 768


def test_the_export_goes_to_any_fsspec_location_the_same(sqlite_url, image_server, fresh_emulator, tmp_path):
    import fsspec

    build_sample_shop(engine_for(sqlite_url), image_server, products=8, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[0]).success
    where = f"memory://export-{tmp_path.name}"  # fsspec's in-memory filesystem: a stand-in for s3://, gs://, ...
    result = dg.materialize(
        [definitions().get_assets_def("embeddings_parquet")],
        partition_key=DAYS[0],
        resources={**resources, "parquet_files": ParquetFiles(base_path=where)},
    )
    assert result.success
    with fsspec.open(f"{where}/embeddings_parquet/{DAYS[0]}.parquet", "rb") as file:
        frame = pd.read_parquet(file)
    with engine_for(sqlite_url).connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT e.product_image_id FROM product_embeddings e "
                "JOIN product_images i ON i.id = e.product_image_id WHERE date(i.created_at) = :day"
            ),
            {"day": DAYS[0]},
        ).scalars()
        assert sorted(frame.product_image_id) == sorted(stored)
    assert len(frame) > 0


def test_the_export_is_run_by_no_sensor_and_no_automation():
    defs = definitions()
    export = dg.AssetKey("embeddings_parquet")
    graph = defs.resolve_asset_graph()
    for sensor in defs.sensors:
        assert export not in sensor.asset_selection.resolve(graph), sensor.name
    assert defs.get_assets_def(export).automation_conditions_by_key.get(export) is None


def test_product_similarities_shows_a_sample_of_lists_in_markdown(sqlite_url, image_server, fresh_emulator, tmp_path):
    build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=TODAY)
    with engine_for(sqlite_url).begin() as conn:  # names that would be markup, or break the table, if not escaped
        conn.execute(sa.text("UPDATE products SET name = '<b>x</b> | ' || name"))
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    result = similarity_run(resources, tmp_path)
    assert result.success
    table = result.asset_materializations_for_node("product_similarities")[0].metadata["sample"].value
    lines = table.splitlines()
    assert lines[0] == "| product | 1. | 2. | 3. | 4. | 5. |" and len(lines) == 7
    with engine_for(sqlite_url).connect() as conn:
        names = dict(conn.execute(sa.text("SELECT id, name FROM products")).all())
        lists = conn.execute(sa.text("SELECT product_id, rank, similar_product_id, score FROM product_similarities"))
        top = {}
        for product, rank, other, score in lists:
            if rank <= 5:
                top.setdefault(product, {})[rank] = (other, score)
    cell = re.compile(r"^&lt;b&gt;x&lt;/b&gt; \\\| (.+) \(#(\d+)\)(?: ([\d.]+))?$")
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        product_name, product = cell.match(cells[0]).group(1, 2)
        assert names[int(product)] == f"<b>x</b> | {product_name}"
        for rank, text in enumerate(cells[1:], start=1):
            name, other, score = cell.match(text).groups()
            assert (int(other), round(top[int(product)][rank][1], 3)) == (top[int(product)][rank][0], float(score))
            assert names[int(other)] == f"<b>x</b> | {name}"
