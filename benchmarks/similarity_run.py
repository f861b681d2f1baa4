"""One materialization of `product_similarities` in a process of its own, as a run would do it; prints JSON.

    python benchmarks/similarity_run.py SHOP_URL INDEX_FOLDER [--full] [--always-increment]

Prints the asset's metadata, the run's wall time and the process's peak RSS (VmHWM: its own, not a parent's).
`--always-increment` lifts the rule that turns a large increment into a full rebuild, to measure what the
increment would cost (the benchmark of where the two cross)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import dagster as dg

import replicate_assets
from replicate_assets.defs.resources import ReplicateResource, ShopDatabase, SimilarityOptions
from replicate_assets.similarity import update


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("index_folder")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--always-increment", action="store_true")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    if args.always_increment:
        update.FULL_FROM = float("inf")  # no catalogue is large enough for the rule
    resources = {
        "shop": ShopDatabase(url=args.url),
        "replicate": ReplicateResource(api_token="unused-by-this-asset"),
        "similarity": SimilarityOptions(k=args.k, index_folder=args.index_folder),
    }
    asset = replicate_assets.defs().get_assets_def("product_similarities")
    config = {"ops": {"product_similarities": {"config": {"full_rebuild": args.full}}}}
    started = time.monotonic()
    result = dg.materialize([asset], resources=resources, run_config=config, instance=dg.DagsterInstance.ephemeral())
    wall = time.monotonic() - started
    metadata = result.asset_materializations_for_node("product_similarities")[0].metadata
    values = {name: value.value for name, value in metadata.items() if name != "sample"}
    print(json.dumps({"wall": wall, "peak_rss_mb": peak_rss_mb(), **values}))


if __name__ == "__main__":
    main()
