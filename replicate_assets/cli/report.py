"""The `status` report: per model counts, products missing embeddings, failed, orphan and uncovered images."""

from __future__ import annotations

import datetime as dt

from replicate_assets.db import Reports, Window
from replicate_assets.settings import Settings


def attempts_text(row, default_max: int) -> str:
    """How a failed image stands: never sent, or its attempts and whether it will be tried again."""
    if row.never_sent:
        return "never sent (fix the row, then it is tried again)"
    allowed = row.max_attempts or default_max
    state = "will retry" if row.attempts < allowed else "gave up"
    return f"{row.attempts} attempt{'s' if row.attempts != 1 else ''}, {state}"


def print_status(reports: Reports, settings: Settings, failed_limit: int = 20) -> None:
    """Print the report to stdout."""
    if not reports.ours_exist:
        print("no embeddings yet: our tables do not exist (`replicate-assets migrate` or the first run makes them)")
    report = reports.status()
    for model, counts in report.items():
        missing = len(reports.products_without_embeddings(Window(), model))
        print(f"model {model}")
        print(f"  embeddings stored:                  {counts['embeddings']}")
        print(f"  distinct products with embeddings:  {counts['products']}")
        print(f"  products with images, no embedding: {missing}")
        print(
            f"  images indexed / pending / failed:  {counts['images_indexed']} / {counts['images_pending']} / "
            f"{counts['images_failed']}"
        )
        failed = reports.failed_images(model, limit=failed_limit)
        if failed:
            print(f"  failed images (first {failed_limit}):")
            for row in failed:
                print(
                    f"    ProductImage #{row.product_image_id} of Product #{row.product_id}, "
                    f"{attempts_text(row, settings.max_attempts)}: {row.error}"
                )
    if reports.ours_exist and not report:
        print("no embeddings yet")
    print_uncovered(reports, settings)


def print_uncovered(reports: Reports, settings: Settings) -> None:
    """Images no run will ever embed as things stand, with what to do about each kind."""
    orphans, first = reports.orphans()
    if orphans:
        print(
            f"orphan images (product_id names no product): {orphans}, e.g. ProductImage #"
            + ", #".join(map(str, first[:5]))
            + ": they are skipped; delete them or restore their products"
        )
    start = dt.date.fromisoformat(settings.start_date)
    today = dt.datetime.now(dt.UTC).date()
    uncovered = reports.uncovered(start, today + dt.timedelta(days=1))
    if uncovered["before_start"]:
        print(
            f"images created before PRODUCT_IMAGES_START_DATE={settings.start_date}: {uncovered['before_start']}: "
            "no partition covers them; set PRODUCT_IMAGES_START_DATE to the day of the first image"
        )
    if uncovered["in_the_future"]:
        print(
            f"images created in the future (after tomorrow, UTC): {uncovered['in_the_future']}: they are embedded "
            "when their day comes; fix their created_at if it is wrong"
        )
    if uncovered["without_created_at"]:
        print(
            f"images without created_at: {uncovered['without_created_at']}: no partition covers them; "
            "set their created_at"
        )
