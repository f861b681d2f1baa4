"""The `replicate-assets` command: test-connection, status, migrate, failed, retry-failed, emulator, demo."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from replicate_assets.catalogue import Catalogue, CatalogueError, Window
from replicate_assets.replicate import ReplicateClient, ReplicateError
from replicate_assets.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="replicate-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("test-connection", help="check REPLICATE_API_TOKEN and REPLICATE_MODEL; embeds nothing")
    commands.add_parser("status", help="embeddings, products and images by model, failed images with reasons")
    commands.add_parser("migrate", help="create product_embeddings and clip_embedding_outcomes where missing")
    failed = commands.add_parser("failed", help="failed images with reasons and attempts (queue:failed)")
    failed.add_argument("--limit", type=int, default=100)
    retry = commands.add_parser("retry-failed", help="make failed images retryable and rerun their days (queue:retry)")
    retry.add_argument("--run", action="store_true", help="run the chain over those days now (else print how)")
    emulator = commands.add_parser("emulator", help="run the local Replicate emulator in the foreground")
    emulator.add_argument("--port", type=int, default=8787)
    emulator.add_argument("--latency", type=float, default=0.5, help="seconds per prediction (default 0.5)")
    emulator.add_argument("--creates-per-minute", type=float, default=600, help="create rate limit (0: none)")
    emulator.add_argument("--token", default=None, help="the only token accepted (default: any)")
    emulator.add_argument(
        "--retention", type=float, default=3600, help="seconds before predictions' data is removed (default 3600)"
    )
    demo = commands.add_parser("demo", help="sample shop + emulator + one Dagster run over every partition")
    demo.add_argument("--products", type=int, default=240)
    demo.add_argument("--days", type=int, default=30)
    demo.add_argument("--serve", action="store_true", help="keep the emulator and the images up for `dagster dev`")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (SettingsError, CatalogueError, ReplicateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def test_connection(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()

    client = ReplicateClient(
        api_token=os.environ.get("REPLICATE_API_TOKEN"),
        base_url=settings.replicate_base_url,
        model=settings.replicate_model,
    )
    print(f"Testing Replicate at {settings.replicate_base_url} with model {settings.replicate_model} ...")
    found = client.test_connection()
    account, model = found["account"], found["model"]
    version = (model.get("latest_version") or {}).get("id", "unknown")
    print(f"OK: token accepted for {account.get('type', 'account')} {account.get('username')!r}")
    print(f"OK: model {model.get('owner')}/{model.get('name')} found (latest version {version})")
    return 0


def status(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    print_status(Catalogue.connect(settings.database_url))
    return 0


def migrate(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    created = Catalogue.connect(settings.database_url).migrate()
    print(f"created: {', '.join(created)}" if created else "nothing to do: our tables exist")
    return 0


def failed(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    rows = Catalogue.connect(settings.database_url).failed_images(limit=args.limit)
    if not rows:
        print("no failed images")
    for row in rows:
        state = "will retry" if row.attempts < settings.max_attempts else "gave up"
        print(
            f"ProductImage #{row.product_image_id} (Product #{row.product_id}) {row.model}, "
            f"{row.attempts} attempts, {state}: {row.error}"
        )
    return 0


def materialize_command(first: str, last: str) -> list[str]:
    """`dagster asset materialize` of the whole chain over the days first...last (one run)."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    return [
        dagster,
        "asset",
        "materialize",
        "-m",
        "replicate_assets",
        "--select",
        "product_images+",
        "--partition-range",
        f"{first}...{last}",
    ]


def shell_line(command: list[str]) -> str:
    """The command as a user would type it."""
    return " ".join(["dagster", *command[1:]]).replace("product_images+", "'product_images+'")


def retry_failed(args: argparse.Namespace) -> int:
    from replicate_assets.replicate import model_spec
    from replicate_assets.sensors import day_ranges

    settings = Settings.from_env()
    days = Catalogue.connect(settings.database_url).reset_failures(model_spec(settings.replicate_model).reference)
    ranges = day_ranges(days)
    print(f"{len(days)} day(s) hold failed images; they are pending again")
    for first, last in ranges:
        command = materialize_command(first, last)
        print("  " + shell_line(command))
        if args.run:
            code = subprocess.run(command).returncode
            if code:
                return code
    if ranges and not args.run:
        print("run those commands, pass --run, or let missing_embeddings_sensor pick them up")
    return 0


def emulator(args: argparse.Namespace) -> int:
    from replicate_assets.emulator import serve

    def ready(emulator: object) -> None:
        print(f"Replicate emulator listening at {emulator.base_url}  (Ctrl-C stops it)")  # type: ignore[attr-defined]
        print(f"  export REPLICATE_BASE_URL={emulator.base_url}")  # type: ignore[attr-defined]
        sys.stdout.flush()

    serve(args.port, args.latency, args.creates_per_minute or None, args.token, args.retention, on_ready=ready)
    return 0


def demo(args: argparse.Namespace) -> int:
    from replicate_assets.demo import run_demo

    return run_demo(Path.cwd(), products=args.products, days=args.days, serve=args.serve)


def print_status(catalogue: Catalogue, failed_limit: int = 20) -> None:
    """The `status` command's report: per model counts, products missing embeddings, failed images."""
    report = catalogue.status()
    if not report:
        print("no embeddings yet")
    for model, counts in report.items():
        missing = len(catalogue.products_without_embeddings(Window(), model))
        print(f"model {model}")
        print(f"  embeddings stored:                  {counts['embeddings']}")
        print(f"  distinct products with embeddings:  {counts['products']}")
        print(f"  products with images, no embedding: {missing}")
        print(
            f"  images indexed / pending / failed:  {counts['images_indexed']} / {counts['images_pending']} / "
            f"{counts['images_failed']}"
        )
        failed = catalogue.failed_images(model, limit=failed_limit)
        if failed:
            print(f"  failed images (first {failed_limit}):")
            for row in failed:
                print(
                    f"    ProductImage #{row.product_image_id} of Product #{row.product_id}, "
                    f"{row.attempts} attempts: {row.error}"
                )


COMMANDS = {
    "test-connection": test_connection,
    "status": status,
    "migrate": migrate,
    "failed": failed,
    "retry-failed": retry_failed,
    "emulator": emulator,
    "demo": demo,
}

if __name__ == "__main__":
    sys.exit(main())
