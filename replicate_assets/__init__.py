"""replicate_assets: CLIP embeddings of a shop's product images, computed by Replicate, as Dagster assets.

Importing the package reads no setting: Dagster builds the definitions by calling `defs()`.
"""

import warnings

import dagster as dg

# backfill_policy is marked beta in Dagster 1.13; we rely on it knowingly (see README).
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from replicate_assets.definitions import defs  # noqa: E402

__all__ = ["defs"]
