"""Daily partitions of `product_images.created_at` (UTC), from PRODUCT_IMAGES_START_DATE to today."""

import dagster as dg

from replicate_assets.settings import Settings

# end_offset=1: today's images belong to a partition today, so sensors can embed them without waiting a day.
daily_partitions = dg.DailyPartitionsDefinition(start_date=Settings.from_env().start_date, end_offset=1)

# One run covers any range of days: a month's backfill is one run, not thirty.
single_run = dg.BackfillPolicy.single_run()
