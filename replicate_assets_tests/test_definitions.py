"""The code location loads and has the shape the README describes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml
from conftest import definitions

from replicate_assets.chain import CHAIN_KEYS

SIMILARITY = {"product_similarities", "similarity_index"}
EXPORT = {"embeddings_parquet"}  # optional: its own group, run by nothing unless selected
SENSORS = {"new_product_images_sensor", "missing_embeddings_sensor", "similarity_automation"}


def test_definitions_load_with_the_three_assets_in_order():
    defs = definitions()
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(CHAIN_KEYS) | SIMILARITY | EXPORT
    assert defs.get_assets_def("embeddings_parquet").group_names_by_key[dg.AssetKey("embeddings_parquet")] == "export"
    assert graph.get(dg.AssetKey("clip_embeddings")).parent_keys == {dg.AssetKey("product_images")}
    assert dg.AssetKey("clip_embeddings") in graph.get(dg.AssetKey("embedding_table")).parent_keys
    for name in CHAIN_KEYS:
        assets_def = defs.get_assets_def(name)
        assert assets_def.partitions_def.get_first_partition_key() == "2024-01-01"
        assert assets_def.backfill_policy == dg.BackfillPolicy.single_run()
    clip = defs.get_assets_def("clip_embeddings")
    policy = clip.op.retry_policy
    # 60 s by default (REPLICATE_RETRY_DELAY_SECONDS); the tests set 1 s.
    assert (policy.max_retries, policy.delay, policy.backoff) == (3, 1, dg.Backoff.EXPONENTIAL)
    assert policy.jitter == dg.Jitter.PLUS_MINUS
    assert clip.op.pool == "replicate_api"
    # Similarity: downstream of the published embeddings, unpartitioned, kept up to date by automation.
    for name in SIMILARITY:
        node = graph.get(dg.AssetKey(name))
        assert dg.AssetKey("embedding_table") in node.parent_keys or name == "similarity_index"
        assert node.partitions_def is None and node.automation_condition is not None
    assert dg.AssetKey("product_similarities") in graph.get(dg.AssetKey("similarity_index")).parent_keys


def test_the_checks_sensors_and_resources():
    defs = definitions()
    names = {key.name for checks in defs.asset_checks for key in checks.check_keys}
    assert names == {
        "products_without_embeddings",
        "embedding_dimensions",
        "failed_images",
        "similarity_index_recall",
        "search_vectors",
        "products_without_neighbours",
        "similarity_lag",
    }
    blocking = {
        key.name
        for checks in defs.asset_checks
        for key in checks.check_keys
        if checks.get_spec_for_check_key(key).blocking
    }
    assert "similarity_index_recall" in blocking
    assert {s.name for s in defs.sensors} == SENSORS
    assert all(s.default_status == dg.DefaultSensorStatus.STOPPED for s in defs.sensors)
    assert set(defs.resources) == {"shop", "replicate", "policy", "progress_log", "similarity", "parquet_files"}


def test_workspace_loads_the_module():
    workspace = yaml.safe_load((Path(__file__).resolve().parents[1] / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "replicate_assets"


def test_dg_checks_and_lists_the_definitions(tmp_path):
    dg_command = str(Path(sys.executable).with_name("dg"))
    project = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}  # dg runs in the project; its instance lives here
    checked = subprocess.run(
        [dg_command, "check", "defs"], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = subprocess.run(
        [dg_command, "list", "defs", "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    found = json.loads(listed.stdout)
    assert {asset["asset_key"] for asset in found["assets"]} == set(CHAIN_KEYS) | SIMILARITY | EXPORT
    assert {sensor["name"] for sensor in found["sensors"]} == SENSORS
