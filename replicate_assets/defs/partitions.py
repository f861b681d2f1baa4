"""Daily partitions of `product_images.created_at` (UTC), from PRODUCT_IMAGES_START_DATE to today."""

import dagster as dg


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's images belong to a partition today, so sensors can embed them without waiting a day.
    return dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1)


# One run covers any range of days: a month's backfill is one run, not thirty.
single_run = dg.BackfillPolicy.single_run()
