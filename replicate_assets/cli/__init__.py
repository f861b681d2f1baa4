"""The `replicate-assets` command: test-connection, status, migrate, failed, retry-failed, free-slots, search, serve,
emulator, demo.

It imports no Dagster definitions: settings are read when a command runs, and every error a user can fix is
one line on stderr (exit 1), never a traceback, and never shows a token or a database password.
"""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from replicate_assets.db import CatalogueError
from replicate_assets.replicate import ReplicateError
from replicate_assets.settings import SettingsError
from replicate_assets.similarity.queries import BadQuery
from replicate_assets.urls import redact


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def port(text: str, lowest: int = 1) -> int:
    value = int(text) if text.isascii() and text.isdigit() else -1
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: use a number between {lowest} and 65535")
    return value


def port_or_any(text: str) -> int:
    """A port, or 0 for any free one (the emulator prints the one it took)."""
    return port(text, lowest=0)


def parser() -> argparse.ArgumentParser:
    from replicate_assets.cli import commands, search

    root = argparse.ArgumentParser(prog="replicate-assets", description=__doc__.splitlines()[0])
    sub = root.add_subparsers(dest="command", required=True)

    def add(name: str, run, help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help, description=help)
        command.set_defaults(handler=run)
        return command

    add("test-connection", commands.test_connection, "check REPLICATE_API_TOKEN and REPLICATE_MODEL; embeds nothing")
    add("status", commands.status, "embeddings, products and images by model, failed and uncovered images")
    migrate = add("migrate", commands.migrate, "upgrade our tables in the shop database to this release's schema")
    checks = migrate.add_mutually_exclusive_group()
    checks.add_argument("--sql", action="store_true", help="print the DDL for review; change nothing")
    checks.add_argument("--check", action="store_true", help="exit 1 with one line when the database is behind")
    migrate.add_argument("--to", metavar="REVISION", help="upgrade or roll back to this revision (default: latest)")
    failed = add("failed", commands.failed, "failed images with reasons and attempts (queue:failed)")
    failed.add_argument("--limit", type=positive, default=100, help="at most this many (default 100)")
    retry = add(
        "retry-failed", commands.retry_failed, "make failed images retryable and rerun their days (queue:retry)"
    )
    retry.add_argument("--run", action="store_true", help="run the chain over those days now (else print how)")
    add(
        "free-slots",
        commands.free_slots,
        "free the replicate_api pool slots of runs that died (needs DAGSTER_HOME); runs do this on their own too",
    )
    found = add("search", search.search, "search the catalogue by words, an example photo, or like a product")
    query = found.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="words, e.g. 'red leather bag' (one prediction, then cached)")
    query.add_argument("--image", help="an http(s) URL of an example photo (one prediction, then cached)")
    query.add_argument("--like-product", metavar="ID", help="products similar to this product")
    found.add_argument("--limit", default="10", help="at most this many products, 1 to 100 (default 10)")
    found.add_argument("--min-score", default=None, help="only products scoring at least this (a cosine, -1 to 1)")
    found.add_argument("--json", action="store_true", help="print one JSON document")
    served = add(
        "serve", search.serve, "the search HTTP API for the shop's web app (GET /search, /products/ID/similar)"
    )
    served.add_argument("--host", default="127.0.0.1", help="listen address (beyond loopback needs SEARCH_API_KEY)")
    served.add_argument("--port", type=port, default=8000)
    emulator = add("emulator", commands.emulator, "run the local Replicate emulator in the foreground")
    emulator.add_argument("--port", type=port_or_any, default=8787, help="0: any free port")
    emulator.add_argument("--latency", type=float, default=0.5, help="seconds per prediction (default 0.5)")
    emulator.add_argument("--creates-per-minute", type=float, default=600, help="create rate limit (0: none)")
    emulator.add_argument("--burst", type=int, default=10, help="creates allowed at once (default 10)")
    emulator.add_argument("--token", default=None, help="the only token accepted (default: any)")
    emulator.add_argument(
        "--retention", type=float, default=3600, help="seconds before predictions' data is removed (default 3600)"
    )
    demo = add("demo", commands.demo, "sample shop + emulator + one Dagster run over every partition")
    demo.add_argument("--products", type=positive, default=240)
    demo.add_argument("--days", type=positive, default=30)
    demo.add_argument("--serve", action="store_true", help="keep the emulator and the images up for `dagster dev`")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as err:  # its message is written to show no secret, and examples of URLs
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BadQuery as err:  # a search asked wrongly: nothing was paid
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CatalogueError, ReplicateError) as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or type(err).__name__).splitlines()[0]
        print(f"error: the shop database answered: {redact(reason)}", file=sys.stderr)
        return 1
    except LookupError as err:
        print(f"error: {str(err).strip(chr(39))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
