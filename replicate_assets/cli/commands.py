"""What each `replicate-assets` command does; `replicate_assets.cli` parses the arguments and reports errors."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from replicate_assets.chain import day_ranges, materialize_command, shell_line
from replicate_assets.cli.report import attempts_text, print_status
from replicate_assets.db import OutcomeStore, Reports, Schema, ShopColumns, connect, migrations
from replicate_assets.replicate import ClientOptions, ReplicateClient
from replicate_assets.settings import Settings


def shop(settings: Settings, create: bool = False, versioned: bool = True) -> Schema:
    """The shop database; read-only commands never create a file or a table."""
    columns = ShopColumns(
        settings.image_path_column, settings.image_created_at_column, settings.image_updated_at_column
    )
    return connect(settings.database_url, columns, create=create, versioned=versioned)


def test_connection(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    options = ClientOptions(base_url=settings.replicate_base_url, model=settings.replicate_model)
    client = ReplicateClient(os.environ.get("REPLICATE_API_TOKEN"), options)
    print(f"Testing Replicate at {client.transport.where()} with model {settings.replicate_model} ...")
    found = client.test_connection()
    account, model = found["account"], found["model"]
    version = client.spec.version or (model.get("latest_version") or {}).get("id", "unknown")
    print(f"OK: token accepted for {account.get('type', 'account')} {account.get('username')!r}")
    print(f"OK: model {model.get('owner')}/{model.get('name')} found (version {version})")
    return 0


def status(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    print_status(Reports(shop(settings)), settings)
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Upgrade our tables (or move them to --to), print the DDL instead (--sql), or only compare (--check)."""
    settings = Settings.from_env()
    schema = shop(settings, create=not (args.check or args.sql), versioned=False)
    found = migrations.version(schema)
    target = migrations.target(found, args.to)
    if args.check:
        problem = found.problem() or (f"no tables of ours yet: run `{migrations.MIGRATE}`" if found.fresh else None)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        print(f"up to date: schema revision {found.current} ({migrations.known()[found.current]})")
        return 0
    if args.sql:
        print(migrations.sql(schema, found, target), end="")
        return 0
    before, after = migrations.move(schema, target)
    if before.current == after.current:
        print(f"nothing to do: schema revision {after.current} ({migrations.known()[after.current]})")
        return 0
    if before.current is None and before.ours:
        print(f"adopted tables an earlier release made: {', '.join(before.ours)}")
    created = [table for table in after.ours if table not in before.ours]
    if created:
        print(f"created: {', '.join(created)}")
    print(f"schema revision {before.current or 'none'} -> {after.current} ({migrations.known()[after.current]})")
    return 0


def failed(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    rows = Reports(shop(settings)).failed_images(limit=args.limit)
    if not rows:
        print("no failed images")
    for row in rows:
        print(
            f"ProductImage #{row.product_image_id} (Product #{row.product_id}) {row.model}, "
            f"{attempts_text(row, settings.max_attempts)}: {row.error}"
        )
    return 0


def retry_failed(args: argparse.Namespace) -> int:
    from replicate_assets.replicate import model_spec

    settings = Settings.from_env()
    days = OutcomeStore(shop(settings)).reset_failures(model_spec(settings.replicate_model).reference)
    today = dt.datetime.now(dt.UTC).date()
    ranges = day_ranges(days, dt.date.fromisoformat(settings.start_date), today + dt.timedelta(days=1))
    print(f"{len(days)} day(s) hold failed or pending images; the failed ones are pending again")
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


def free_slots(_args: argparse.Namespace) -> int:
    if not os.environ.get("DAGSTER_HOME"):
        print("error: DAGSTER_HOME is not set: pool slots live in a Dagster instance", file=sys.stderr)
        return 1
    import dagster as dg

    from replicate_assets.defs.runs import POOL, free_stale_slots

    class Printer:
        def warning(self, line: str) -> None:
            print(line)

    with dg.DagsterInstance.get() as instance:
        freed = free_stale_slots(instance, Printer())
    if not freed:
        print(f"no {POOL} pool slot is held by a run that ended or whose process is gone")
    return 0


def emulator(args: argparse.Namespace) -> int:
    from replicate_assets.cli.demo import stop_on_signals
    from replicate_assets.testing.emulator import Emulator, serve

    def ready(running: Emulator) -> None:
        print(f"Replicate emulator listening at {running.base_url}  (Ctrl-C stops it)")
        print(f"  export REPLICATE_BASE_URL={running.base_url}")
        sys.stdout.flush()

    stop_on_signals()
    try:
        serve(
            args.port,
            args.latency,
            args.creates_per_minute or None,
            args.token,
            args.retention,
            on_ready=ready,
            burst=args.burst,
        )
    except OSError as err:
        print(
            f"error: the emulator cannot listen on port {args.port}: {err.strerror}; pick another --port",
            file=sys.stderr,
        )
        return 1
    return 0


def demo(args: argparse.Namespace) -> int:
    from replicate_assets.cli.demo import run_demo

    return run_demo(Path.cwd(), products=args.products, days=args.days, serve=args.serve)
