"""The demo: a sample shop, the emulator, and one real Dagster run over every partition, on embedded defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from replicate_assets.chain import materialize_command, shell_line
from replicate_assets.cli.report import print_status
from replicate_assets.db import Reports, connect, engine_for
from replicate_assets.settings import DEFAULT_DATABASE_URL, DEFAULT_EMBEDDINGS_LOG, Settings

DEMO_TOKEN = "r8_demo_token_for_the_local_emulator"


def stop_on_signals() -> None:
    """Ctrl-C and `kill` both stop a command that serves in the foreground, also when its parent started it with
    SIGINT ignored (a shell's background job, a test runner's worker), which Python would otherwise inherit."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def instance_yaml() -> str:
    """The instance the README documents (pools, run monitoring), shipped inside the package."""
    return resources.files("replicate_assets").joinpath("instance.yaml").read_text()


DEMO_QUERY = "http://127.0.0.1:8000/search?text=red+leather+bag&limit=3"  # cached by the demo: answered offline
DEMO_PAGE = "http://127.0.0.1:8000/?text=red+leather+bag"


def run_demo(workdir: Path, products: int = 240, days: int = 30, latency: float = 0.05, serve: bool = False) -> int:
    """Build the sample shop in `workdir`, embed it through `dagster asset materialize`, print the status."""
    from replicate_assets.testing.emulator import Emulator
    from replicate_assets.testing.sample_shop import ImageServer, build_sample_shop

    database = workdir / DEFAULT_DATABASE_URL.removeprefix("sqlite:///")
    database.parent.mkdir(parents=True, exist_ok=True)
    dagster_home = workdir / ".dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(instance_yaml())
    log_file = workdir / DEFAULT_EMBEDDINGS_LOG
    images = ImageServer()
    with Emulator(
        latency=latency, jitter=latency, creates_per_minute=6000, burst=50, token=DEMO_TOKEN, log_requests=False
    ) as emulator:
        shop = build_sample_shop(engine_for(sqlite_url(database)), images, products=products, days=days)
        print(
            f"sample shop: {shop.products} products, {shop.images} images from {shop.first_day} to "
            f"{shop.last_day} in {database} ({len(shop.broken)} images broken on purpose)"
        )
        print(f"Replicate emulator at {emulator.base_url}, images served at {images.base_url}")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "SHOP_IMAGE_"))},
            "DAGSTER_HOME": str(dagster_home.resolve()),
            "DATABASE_URL": sqlite_url(database),
            "IMAGE_BASE_URL": images.base_url,
            "PRODUCT_IMAGES_START_DATE": str(shop.first_day),  # the UI shows the demo's days, not 2024 on
            "REPLICATE_BASE_URL": emulator.base_url,
            "REPLICATE_API_TOKEN": DEMO_TOKEN,
            "REPLICATE_MAX_PREDICTIONS_PER_MINUTE": "6000",
            "REPLICATE_EMBEDDINGS_LOG": str(log_file.resolve()),
        }
        command = materialize_command(str(shop.first_day), str(shop.last_day))
        print(f"running: {shell_line(command)}")
        run_log = workdir / "logs" / "demo_dagster_run.log"
        run_log.parent.mkdir(parents=True, exist_ok=True)
        env["SIMILARITY_INDEX_DIR"] = str((workdir / "data" / "index").resolve())
        similar = [*command[:5], "--select", "product_similarities,similarity_index"]
        with run_log.open("w") as out:
            result = subprocess.run(command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
            if result.returncode == 0:
                print(f"running: {shell_line(similar)}")
                result = subprocess.run(similar, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode == 0:
            report(env, run_log, log_file)
            show_search(env, shop)
            if serve:
                serve_until_interrupted(env)
        images.stop()
    if result.returncode != 0:
        print(f"the Dagster run failed (exit {result.returncode}); its output is in {run_log}:")
        print("\n".join(run_log.read_text().splitlines()[-30:]))
        return result.returncode
    if not serve:
        print(
            f"See it in the Dagster UI: DAGSTER_HOME={dagster_home.resolve()} "
            f"PRODUCT_IMAGES_START_DATE={shop.first_day} .venv/bin/dagster dev -w workspace.yaml"
        )
        where = f"DATABASE_URL={env['DATABASE_URL']} SIMILARITY_INDEX_DIR={env['SIMILARITY_INDEX_DIR']}"
        print("Search it over HTTP (the server in one terminal, the query in another):")
        print(f"  {where} .venv/bin/replicate-assets serve")
        print(f"  curl '{DEMO_QUERY}'")
        print(f"Look at it in a browser: {DEMO_PAGE} (the pictures show while `scripts/demo --serve` keeps them up)")
    return 0


def show_search(env: dict[str, str], shop) -> None:
    """Similar products of one product, and a text search: what the shop's pages would show."""
    from replicate_assets.cli.search import searcher_for

    searcher = searcher_for(Settings.from_env(env), env["REPLICATE_API_TOKEN"])  # the demo's emulator and token
    product = min(shop.categories)
    name = shop.categories[product]
    print(f"Products similar to #{product} ({name}):  replicate-assets search --like-product {product}")
    for hit in searcher.like_product(product, 5).hits:
        print(f"  {hit.score:.3f}  #{hit.product_id:<5} {hit.name}")
    print('Products for the words "red leather bag":  replicate-assets search --text "red leather bag"')
    for hit in searcher.query("text", "red leather bag", 5).hits:
        print(f"  {hit.score:.3f}  #{hit.product_id:<5} {hit.name}")
    print("(the emulator's vectors stand in for CLIP: images of one category, and the words that name it, are near)")
    print()


def report(env: dict[str, str], run_log: Path, log_file: Path) -> None:
    print(f"the Dagster run succeeded; its output is in {run_log}, the progress log in {log_file}")
    print()
    print_status(Reports(connect(env["DATABASE_URL"])), Settings.from_env(env))
    print()


def serve_until_interrupted(env: dict[str, str]) -> None:
    """Keep the emulator and the image server up, and say how to point `dagster dev` at them."""
    names = (
        "DAGSTER_HOME",
        "DATABASE_URL",
        "IMAGE_BASE_URL",
        "PRODUCT_IMAGES_START_DATE",
        "REPLICATE_BASE_URL",
        "REPLICATE_API_TOKEN",
    )
    print("The emulator and the sample images stay up until Ctrl-C. In another terminal:")
    print("  " + " ".join(f"{name}={env[name]}" for name in names) + " .venv/bin/dagster dev -w workspace.yaml")
    page = ("DATABASE_URL", "IMAGE_BASE_URL", "SIMILARITY_INDEX_DIR", "REPLICATE_BASE_URL", "REPLICATE_API_TOKEN")
    print(f"The page with pictures ({DEMO_PAGE}, /review), in a third:")
    print("  " + " ".join(f"{name}={env[name]}" for name in page) + " .venv/bin/replicate-assets serve")
    sys.stdout.flush()
    stop_on_signals()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped")
