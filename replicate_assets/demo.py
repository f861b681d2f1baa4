"""The demo: a sample shop, the emulator, and one real Dagster run over every partition, on embedded defaults."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from replicate_assets.catalogue import Catalogue, engine_for
from replicate_assets.cli import materialize_command, print_status, shell_line
from replicate_assets.emulator import Emulator
from replicate_assets.sample_shop import ImageServer, build_sample_shop
from replicate_assets.settings import DEFAULT_DATABASE_URL, DEFAULT_EMBEDDINGS_LOG

DEMO_TOKEN = "r8_demo_token_for_the_local_emulator"
SHIPPED_DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def run_demo(workdir: Path, products: int = 240, days: int = 30, latency: float = 0.05, serve: bool = False) -> int:
    """Build the sample shop in `workdir`, embed it through `dagster asset materialize`, print the status."""
    database = workdir / DEFAULT_DATABASE_URL.removeprefix("sqlite:///")
    dagster_home = workdir / ".dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():  # the instance the README documents: pools, monitoring
        text = SHIPPED_DAGSTER_YAML.read_text() if SHIPPED_DAGSTER_YAML.exists() else "telemetry:\n  enabled: false\n"
        (dagster_home / "dagster.yaml").write_text(text)
    log_file = workdir / DEFAULT_EMBEDDINGS_LOG
    engine = engine_for(sqlite_url(database))
    images = ImageServer()
    with Emulator(
        latency=latency, jitter=latency, creates_per_minute=6000, burst=50, token=DEMO_TOKEN, log_requests=False
    ) as emulator:
        shop = build_sample_shop(engine, images, products=products, days=days)
        print(
            f"sample shop: {shop.products} products, {shop.images} images from {shop.first_day} to "
            f"{shop.last_day} in {database} ({len(shop.broken)} images broken on purpose)"
        )
        print(f"Replicate emulator at {emulator.base_url}, images served at {images.base_url}")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home.resolve()),
            "DATABASE_URL": sqlite_url(database),
            "IMAGE_BASE_URL": images.base_url,
            "REPLICATE_BASE_URL": emulator.base_url,
            "REPLICATE_API_TOKEN": DEMO_TOKEN,
            "REPLICATE_MAX_PREDICTIONS_PER_MINUTE": "6000",
            "REPLICATE_EMBEDDINGS_LOG": str(log_file.resolve()),
        }
        env.pop("REPLICATE_MODEL", None)
        command = materialize_command(str(shop.first_day), str(shop.last_day))
        print(f"running: {shell_line(command)}")
        run_log = workdir / "logs" / "demo_dagster_run.log"
        run_log.parent.mkdir(parents=True, exist_ok=True)
        with run_log.open("w") as out:
            result = subprocess.run(command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode == 0 and serve:
            report(database, run_log, log_file)
            serve_until_interrupted(env, dagster_home)
        images.stop()
    if result.returncode != 0:
        print(f"the Dagster run failed (exit {result.returncode}); its output is in {run_log}:")
        print("\n".join(run_log.read_text().splitlines()[-30:]))
        return result.returncode
    if not serve:
        report(database, run_log, log_file)
        print(f"See it in the Dagster UI: DAGSTER_HOME={dagster_home} dagster dev -w workspace.yaml")
    return 0


def report(database: Path, run_log: Path, log_file: Path) -> None:
    print(f"the Dagster run succeeded; its output is in {run_log}, the progress log in {log_file}")
    print()
    print_status(Catalogue.connect(sqlite_url(database)))
    print()


def serve_until_interrupted(env: dict[str, str], dagster_home: Path) -> None:
    """Keep the emulator and the image server up, and say how to point `dagster dev` at them."""
    names = ("DAGSTER_HOME", "DATABASE_URL", "IMAGE_BASE_URL", "REPLICATE_BASE_URL", "REPLICATE_API_TOKEN")
    print("The emulator and the sample images stay up until Ctrl-C. In another terminal:")
    print("  " + " ".join(f"{name}={env[name]}" for name in names) + " .venv/bin/dagster dev -w workspace.yaml")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped")
