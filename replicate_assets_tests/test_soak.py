"""Left alone, it stays right: the real daemon runs the three sensors (new images, missing embeddings, similarity
automation) against the emulator while a driver plays a shop's life in cycles; after each cycle, once quiet, what
a user relies on holds.

Cycles: the first catalogue; new products (one image dated 6 h in the future, one committed late with an older
`updated_at`), an edited image, a deleted image, a soft-deleted and a deleted product; Replicate unreachable while
products arrive, then back; the daemon restarted while a product arrives. Checked after each: every good image
has exactly one row in product_embeddings and was paid for once over the whole test; the lists equal a full rebuild
computed apart; no list and no search answer shows a gone product; nothing lags (what the similarity_lag check
reports). Bounded: each cycle waits at most a few minutes for quiet, with SENSOR_INTERVAL_SECONDS=5.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import BIN, PROJECT, TOKEN
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from replicate_assets.db import connect, engine_for
from replicate_assets.db.vectors import VectorStore
from replicate_assets.defs.embeddings.sensors import IN_PROGRESS
from replicate_assets.similarity.search import Searcher
from replicate_assets.similarity.update import update_similarities
from replicate_assets.testing.emulator import Faults
from replicate_assets.testing.sample_shop import build_sample_shop, png

MODEL = "openai/clip"
QUIET_SECONDS = 240


class Shop:
    """The driver: writes to the shop's tables as a Laravel app would, and knows what should be true."""

    def __init__(self, url: str, image_server, first_day: dt.date):
        self.url, self.images, self.first_day = url, image_server, first_day
        self.next_id = 5000

    def execute(self, sql: str, **params) -> None:
        with engine_for(self.url).begin() as conn:
            conn.execute(sa.text(sql), params)

    def add_product(self, images: int = 1, updated: dt.datetime | None = None) -> list[int]:
        """A product with `images` new images (served), dated now (or `updated`); returns their ids."""
        self.next_id += 1
        product, now = self.next_id, utcnow()
        self.execute(
            "INSERT INTO products (id, name, created_at, updated_at) VALUES (:p, :n, :t, :t)",
            p=product,
            n=f"Soak product {product}",
            t=now,
        )
        ids = []
        for n in range(images):
            self.next_id += 1
            self.images.images[f"soak/{self.next_id}.png"] = png(self.next_id, category="red leather bag")
            self.execute(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) VALUES (:i, :p, :u, :c, :t)",
                i=self.next_id,
                p=product,
                u=f"soak/{self.next_id}.png",
                c=now - dt.timedelta(minutes=n),
                t=updated or now,
            )
            ids.append(self.next_id)
        return ids

    def delete_product(self, product: int) -> None:
        for table, column in (("product_embeddings", "product_id"), ("product_images", "product_id")):
            self.execute(f"DELETE FROM {table} WHERE {column} = :p", p=product)  # as the foreign keys cascade
        self.execute("DELETE FROM products WHERE id = :p", p=product)

    def good_images(self) -> set[int]:
        """Images of live products whose path the image server serves: each must end with one embedding."""
        with engine_for(self.url).connect() as conn:
            rows = conn.execute(
                sa.text("SELECT i.id, i.path FROM product_images i JOIN products p ON p.id = i.product_id")
            ).all()
        served = set(self.images.images)
        return {i for i, path in rows if path and path.removeprefix(self.images.base_url + "/") in served}

    def live_products(self) -> set[int]:
        with engine_for(self.url).connect() as conn:
            return {r[0] for r in conn.execute(sa.text("SELECT id FROM products WHERE deleted_at IS NULL"))}

    def ready(self) -> bool:
        """The pipeline has made its tables (the test never makes them itself)."""
        with engine_for(self.url).connect() as conn:
            return {"product_embeddings", "clip_image_vectors"} <= set(sa.inspect(conn).get_table_names())

    def embedded(self) -> list[int]:
        with engine_for(self.url).connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT product_image_id FROM product_embeddings"))]

    def lists(self, url: str | None = None) -> list[tuple]:
        with engine_for(url or self.url).connect() as conn:
            rows = conn.execute(
                sa.text("SELECT product_id, rank, similar_product_id, score FROM product_similarities ORDER BY 1, 2")
            ).all()
        return [(p, r, q, round(s, 5)) for p, r, q, s in rows]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class Daemon:
    """`dagster-daemon run` in its own process group, its output in a file."""

    def __init__(self, env: dict, workspace: Path, log: Path):
        self.env, self.workspace, self.log, self.process = env, workspace, log, None

    def start(self) -> None:
        out = self.log.open("a")
        self.process = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
            env=self.env,
            cwd=self.workspace.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def soak(tmp_path, image_server, fresh_emulator):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: replicate_assets\n")
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    sample = build_sample_shop(engine_for(url), image_server, products=16, days=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "DAGSTER_", "SEARCH_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DATABASE_URL=url,
        IMAGE_BASE_URL=image_server.base_url,
        PRODUCT_IMAGES_START_DATE=str(sample.first_day),
        REPLICATE_API_TOKEN=TOKEN,
        REPLICATE_BASE_URL=fresh_emulator.base_url,
        REPLICATE_MAX_PREDICTIONS_PER_MINUTE="60000",
        REPLICATE_MAX_ATTEMPTS="1",  # a dead URL gives up at once: no retries due during the test
        REPLICATE_RETRY_DELAY_SECONDS="1",
        REPLICATE_EMBEDDINGS_LOG=str(tmp_path / "progress.log"),
        SIMILARITY_INDEX_DIR=str(tmp_path / "index"),
        SENSOR_INTERVAL_SECONDS="5",
    )
    daemon = Daemon(env, workspace, tmp_path / "daemon.log")
    started = subprocess.run(  # first: it makes the instance's storage, which the daemon then opens
        [str(BIN / "dagster"), "sensor", "start", "--start-all", "-w", str(workspace)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    daemon.start()
    try:
        yield Shop(url, image_server, sample.first_day), daemon, env, tmp_path
    finally:
        daemon.stop()
        for key in [k for k in image_server.images if k.startswith("soak/")]:
            del image_server.images[key]


def wait_until_quiet(shop: Shop, env: dict, daemon: Daemon) -> float:
    """Until no run or backfill is in flight and the lists hold every good image's embedding; returns seconds."""
    started = time.monotonic()
    calm = 0
    while time.monotonic() - started < QUIET_SECONDS:
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            busy = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS), limit=1)
            backfills = instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=1)
        done = shop.ready() and shop.good_images() <= set(shop.embedded())
        lag = VectorStore(connect(shop.url)).lag(MODEL).images if done else None
        calm = calm + 1 if not busy and not backfills and done and lag == 0 else 0
        if calm >= 3:  # three polls in a row: no tick is about to start something
            return time.monotonic() - started
        time.sleep(1)
    state = {
        "runs in progress": len(busy),
        "backfills requested": len(backfills),
        "good images not embedded": sorted(shop.good_images() - set(shop.embedded())) if shop.ready() else "no tables",
        "lag": VectorStore(connect(shop.url)).lag(MODEL) if shop.ready() else None,
    }
    raise AssertionError(
        f"not quiet after {QUIET_SECONDS} s: {state}; the daemon's log ends:\n{daemon.log.read_text()[-2000:]}"
    )


def lag_check_passed(env: dict) -> bool:
    """The latest similarity_lag result the daemon's runs recorded in the instance (what the UI shows); a check run
    only planned (queued by its hourly schedule) is not a result yet."""
    key = dg.AssetCheckKey(dg.AssetKey("product_similarities"), "similarity_lag")
    done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1, status=done)
    assert records, "similarity_lag never ran"
    evaluation = records[0].event.asset_check_evaluation if records[0].event else None
    assert records[0].status == AssetCheckExecutionRecordStatus.SUCCEEDED, (records[0].status, evaluation)
    return True


def verify(shop: Shop, emulator, tmp_path: Path, cycle: str) -> dict:
    """What a user relies on, computed apart from the code under test where it can be."""
    good, embedded = shop.good_images(), shop.embedded()
    assert sorted(embedded) == sorted(set(embedded)), f"{cycle}: an image has two rows"
    assert set(embedded) == good, f"{cycle}: embedded {sorted(set(embedded) ^ good)} differ from the good images"
    paid = emulator.creates_per_input()
    twice = {u: n for u, n in paid.items() if n > 1}
    assert not twice, f"{cycle}: paid for twice: {twice}"
    copy = tmp_path / f"rebuild-{cycle}.db"
    with sqlite3.connect(shop.url.removeprefix("sqlite:///")) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # the database as it is now, write-ahead log included
    rebuilt = f"sqlite:///{copy}"
    update_similarities(connect(rebuilt), MODEL, 20, full=True)
    assert shop.lists() == shop.lists(rebuilt), f"{cycle}: the lists differ from a full rebuild"
    live = shop.live_products()
    listed = {p for p, _, q, _ in shop.lists()} | {q for _, _, q, _ in shop.lists()}
    assert listed <= live, f"{cycle}: gone products in the lists: {sorted(listed - live)}"
    searcher = Searcher(connect(shop.url), MODEL, str(tmp_path / "index"))
    for product in sorted(live)[:5]:
        try:
            answer = searcher.like_product(product, 10)
        except LookupError:
            continue  # a product without an embedded image
        assert {h.product_id for h in answer.hits} <= live, f"{cycle}: a gone product answered"
    assert VectorStore(connect(shop.url)).lag(MODEL).images == 0  # what the similarity_lag check reports
    return {"images": len(good), "paid": sum(paid.values()), "products": len(live)}


def test_left_alone_for_a_shop_s_life_it_stays_right(soak, fresh_emulator):
    shop, daemon, env, tmp_path = soak
    seen = {}
    seen["first catalogue"] = (wait_until_quiet(shop, env, daemon), verify(shop, fresh_emulator, tmp_path, "first"))
    assert lag_check_passed(env)  # the check ran with the lists, in the daemon's run, and says nothing lags

    # A shop's day: new products (one dated 6 h ahead, one committed late with an older updated_at), an edited image,
    # a deleted image, a soft-deleted and a deleted product.
    shop.add_product(images=2)
    shop.add_product(images=1, updated=utcnow() + dt.timedelta(hours=6))
    shop.add_product(images=1, updated=utcnow() - dt.timedelta(minutes=30))
    with engine_for(shop.url).connect() as conn:
        products = [r[0] for r in conn.execute(sa.text("SELECT id FROM products ORDER BY id LIMIT 4"))]
        edited = conn.execute(
            sa.text(
                "SELECT id FROM product_images WHERE id IN (SELECT product_image_id FROM product_embeddings) LIMIT 2"
            )
        ).all()
    shop.images.images["soak/edited.png"] = png(4242, category="blue running shoe")
    shop.execute(
        "UPDATE product_images SET path = 'soak/edited.png', updated_at = :t WHERE id = :i", t=utcnow(), i=edited[0][0]
    )
    shop.execute("DELETE FROM product_embeddings WHERE product_image_id = :i", i=edited[1][0])
    shop.execute("DELETE FROM product_images WHERE id = :i", i=edited[1][0])
    shop.execute("UPDATE products SET deleted_at = :t WHERE id = :p", t=utcnow(), p=products[1])
    shop.delete_product(products[2])
    seen["a shop's day"] = (wait_until_quiet(shop, env, daemon), verify(shop, fresh_emulator, tmp_path, "day"))

    # Replicate unreachable (a captive proxy answers instead) while products arrive: nothing is paid, they wait.
    fresh_emulator.set_faults(Faults(not_replicate=True))
    waiting = shop.add_product(images=2)
    time.sleep(20)  # a few ticks: a run tries, finds no Replicate, leaves the images pending
    assert not set(waiting) & set(shop.embedded())
    fresh_emulator.set_faults(Faults())
    seen["Replicate away, then back"] = (
        wait_until_quiet(shop, env, daemon),
        verify(shop, fresh_emulator, tmp_path, "outage"),
    )

    # The daemon restarts while a product arrives.
    daemon.stop()
    shop.add_product(images=1)
    daemon.start()
    seen["daemon restart"] = (wait_until_quiet(shop, env, daemon), verify(shop, fresh_emulator, tmp_path, "restart"))
    assert lag_check_passed(env)
    for cycle, (seconds, figures) in seen.items():
        print(f"soak: {cycle}: quiet after {seconds:.0f} s; {figures}")
