"""The Dagster UI as a person uses it: `dagster dev` (webserver + daemon), its GraphQL API, and headless Chromium.

Runs once on the SQLite instance with a SQLite shop, and once on a PostgreSQL instance with a MariaDB shop.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from conftest import BIN, DAYS, PROJECT, TODAY, TOKEN, drop_server_database, server_database

from replicate_assets.db import engine_for
from replicate_assets.testing.sample_shop import build_sample_shop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOCATION = {"repositoryLocationName": "replicate_assets", "repositoryName": "__repository__"}
SIMILARITY = {"product_similarities", "similarity_index"}
CHAIN = [{"path": ["product_images"]}, {"path": ["clip_embeddings"]}, {"path": ["embedding_table"]}]


@dataclass
class Server:
    url: str
    shop_url: str
    home: Path
    log: Path

    def graphql(self, query: str, **variables) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    tail = "\n".join(log.read_text().splitlines()[-40:]) if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.mariadb])]
)
def server(request, image_server, emulator, tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "DAGSTER_", "DATABASE_URL"))}
    databases = []
    if request.param == "sqlite":
        shop_url = f"sqlite:///{home / 'shop.db'}"
        shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    else:
        instance_url = server_database("postgresql")
        shop_url = server_database("mariadb")
        databases = [instance_url, shop_url]
        shutil.copy(PROJECT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
        env.update(
            DAGSTER_PG_HOST="127.0.0.1",
            DAGSTER_PG_USERNAME="postgres",
            DAGSTER_PG_PASSWORD="",
            DAGSTER_PG_DB=sa.make_url(instance_url).database,
        )
    build_sample_shop(engine_for(shop_url), image_server, products=30, days=3, today=TODAY)
    env.update(
        DAGSTER_HOME=str(home),
        DATABASE_URL=shop_url,
        IMAGE_BASE_URL=image_server.base_url,
        REPLICATE_BASE_URL=emulator.base_url,
        REPLICATE_API_TOKEN=TOKEN,
        REPLICATE_MAX_PREDICTIONS_PER_MINUTE="60000",
        REPLICATE_EMBEDDINGS_LOG=str(home / "progress.log"),
    )
    port = free_port()
    log = home / "dagster_dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", str(PROJECT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Server(f"http://127.0.0.1:{port}", shop_url, home, log)

    def location_loaded():
        try:
            data = running.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                "locationOrLoadError { __typename } } } } }"
            )
        except (requests.RequestException, AssertionError):
            return False
        entries = data["workspaceOrError"]["locationEntries"]
        return entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"

    try:
        wait_for(location_loaded, 120, "dagster dev to load the code location", log)
        yield running
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        for url in databases:
            drop_server_database(url)


def backfill_done(server: Server, backfill_id: str) -> str | None:
    status = server.graphql(
        "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
        id=backfill_id,
    )["partitionBackfillOrError"]["status"]
    return status if status not in ("REQUESTED", "CANCELING", "FAILING") else None


def test_the_ui_shows_the_chain_its_checks_and_sensors(server):
    data = server.graphql(
        "{ assetNodes { assetKey { path } dependencyKeys { path } isPartitioned "
        "assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } "
        'sensorsOrError(repositorySelector: {repositoryLocationName: "replicate_assets", '
        'repositoryName: "__repository__"}) { ... on Sensors { results { name sensorState { status } } } } }'
    )
    nodes = {n["assetKey"]["path"][0]: n for n in data["assetNodes"]}
    assert set(nodes) == {"product_images", "clip_embeddings", "embedding_table", "embeddings_parquet", *SIMILARITY}
    assert [d["path"][0] for d in nodes["clip_embeddings"]["dependencyKeys"]] == ["product_images"]
    assert {d["path"][0] for d in nodes["embedding_table"]["dependencyKeys"]} == {"product_images", "clip_embeddings"}
    assert all(n["isPartitioned"] != (name in SIMILARITY) for name, n in nodes.items())
    assert "embedding_table" in {d["path"][0] for d in nodes["product_similarities"]["dependencyKeys"]}
    checks = {c["name"]: c["blocking"] for c in nodes["clip_embeddings"]["assetChecksOrError"]["checks"]}
    assert checks == {"embedding_dimensions": True, "failed_images": False}
    index_checks = {c["name"]: c["blocking"] for c in nodes["similarity_index"]["assetChecksOrError"]["checks"]}
    assert index_checks["similarity_index_recall"] is True
    sensors = {s["name"]: s["sensorState"]["status"] for s in data["sensorsOrError"]["results"]}
    assert sensors == {
        "new_product_images_sensor": "STOPPED",
        "missing_embeddings_sensor": "STOPPED",
        "similarity_automation": "STOPPED",  # runs the similarity assets when new embeddings land, once started
    }


def test_a_backfill_over_a_range_is_one_run_with_materializations_and_checks(server):
    launched = server.graphql(
        "mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) { "
        "__typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }",
        params={"partitionNames": DAYS[:2], "assetSelection": CHAIN, "fromFailure": False},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    finished = wait_for(lambda: backfill_done(server, backfill_id), 240, "the backfill", server.log)
    assert finished in ("COMPLETED", "COMPLETED_SUCCESS")
    runs = server.graphql(
        'query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) '
        "{ ... on Runs { results { status tags { key value } } } } }",
        id=backfill_id,
    )
    [run] = runs["runsOrError"]["results"]  # BackfillPolicy.single_run(): two days, one run
    assert run["status"] == "SUCCESS"

    data = server.graphql(
        'query($days: [String!]) { assetOrError(assetKey: {path: ["embedding_table"]}) { ... on Asset { '
        "assetMaterializations(partitions: $days) { partition metadataEntries { label "
        "... on IntMetadataEntry { intValue } } } } } }",
        days=DAYS[:2],
    )
    materializations = data["assetOrError"]["assetMaterializations"]
    assert sorted(m["partition"] for m in materializations) == DAYS[:2]
    metadata = {e["label"]: e.get("intValue") for e in materializations[0]["metadataEntries"]}
    assert metadata["images_indexed"] > 0 and metadata["rows_upserted"] > 0  # numbers Dagster plots

    checks = server.graphql(
        '{ assetCheckExecutions(assetKey: {path: ["clip_embeddings"]}, '
        'checkName: "embedding_dimensions", limit: 5) { status evaluation { success } } }'
    )
    assert checks["assetCheckExecutions"][0]["evaluation"]["success"] is True
    with engine_for(server.shop_url).connect() as conn:
        days = [
            str(d)[:10]
            for (d,) in conn.execute(
                sa.text(
                    "SELECT i.created_at FROM product_embeddings e JOIN product_images i ON i.id = e.product_image_id"
                )
            )
        ]
    assert days and set(days) == set(DAYS[:2])


def test_a_started_sensor_embeds_new_images_on_a_real_daemon_tick(server):
    selector = {**LOCATION, "sensorName": "new_product_images_sensor"}
    started = server.graphql(
        "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
        "... on Sensor { id sensorState { id status } } } }",
        s=selector,
    )["startSensor"]
    assert started["sensorState"]["status"] == "RUNNING"

    def sensor_runs_done():
        runs = server.graphql(
            '{ runsOrError(filter: {tags: [{key: "dagster/sensor_name", '
            'value: "new_product_images_sensor"}]}) { ... on Runs { results { status tags { key value } } } } }'
        )
        found = runs["runsOrError"]["results"]
        done = found and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in found)
        return found if done else None

    runs = wait_for(sensor_runs_done, 240, "the sensor's run", server.log)
    assert [r["status"] for r in runs] == ["SUCCESS"]  # one run for the three days (single-run backfill policy)
    # The sensor asked for a backfill: listed under the UI's backfills, with per-partition status.
    [backfill_id] = {t["value"] for t in runs[0]["tags"] if t["key"] == "dagster/backfill"}
    backfill = server.graphql(
        "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { "
        "status numPartitions } } }",
        id=backfill_id,
    )["partitionBackfillOrError"]
    assert backfill["numPartitions"] == len(DAYS)
    assert wait_for(lambda: backfill_done(server, backfill_id), 60, "the backfill", server.log) in (
        "COMPLETED",
        "COMPLETED_SUCCESS",
    )
    server.graphql("mutation($id: String!) { stopSensor(id: $id, jobOriginId: $id) { __typename } }", id=started["id"])
    with engine_for(server.shop_url).connect() as conn:
        images = conn.execute(sa.text("SELECT COUNT(*) FROM product_images")).scalar_one()
        failed = conn.execute(sa.text("SELECT COUNT(*) FROM clip_embedding_outcomes WHERE status = 'failed'"))
        stored = conn.execute(sa.text("SELECT COUNT(*) FROM product_embeddings")).scalar_one()
    assert stored == images - failed.scalar_one()


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="no Chromium here (apt-get install chromium)")
def test_the_asset_graph_in_headless_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "CI must have Chromium: .ci/run installs Debian's chromium package"
    shot = tmp_path / "asset-graph.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 800})
        page.goto(f"{server.url}/asset-groups")
        skip = page.get_by_role("button", name="Skip")  # Dagster's newsletter dialog on a first visit
        skip.click(timeout=30_000)
        # The lineage shows the two groups folded: open each (its box in the graph, the last match of its name).
        for group in ("replicate", "similarity"):
            page.get_by_text(group, exact=True).last.wait_for(timeout=30_000)
            page.get_by_text(group, exact=True).last.dblclick()
        for name in ("product_images", "clip_embeddings", "embedding_table", "similarity_index"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 20_000
    if os.environ.get("REPLICATE_ASSETS_SCREENSHOT"):  # refresh the README's picture
        shutil.copy(shot, os.environ["REPLICATE_ASSETS_SCREENSHOT"])
