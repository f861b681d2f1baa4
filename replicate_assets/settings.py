"""Configuration read from environment variables: one place, validated, with the README's defaults."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
DEFAULT_MODEL = "openai/clip"
DEFAULT_DATABASE_URL = "sqlite:///data/shop.db"
DEFAULT_START_DATE = "2024-01-01"
DEFAULT_EMBEDDINGS_LOG = "logs/replicate_embeddings.log"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    image_base_url: str | None = None
    replicate_base_url: str = DEFAULT_BASE_URL
    replicate_model: str = DEFAULT_MODEL
    start_date: str = DEFAULT_START_DATE
    embeddings_log: str = DEFAULT_EMBEDDINGS_LOG
    chunk_size: int = 50
    max_attempts: int = 3
    retry_delay_seconds: float = 60.0
    max_predictions_per_minute: int = 600
    max_in_flight: int = 16
    batch_size: int = 50
    prediction_timeout_seconds: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read and validate every setting; raises SettingsError naming the bad variable."""

        def get(name: str, default: str | None) -> str | None:
            value = environ.get(name, "").strip()
            return value or default

        settings = cls(
            database_url=get("DATABASE_URL", DEFAULT_DATABASE_URL),
            image_base_url=get("IMAGE_BASE_URL", None),
            replicate_base_url=get("REPLICATE_BASE_URL", DEFAULT_BASE_URL).rstrip("/"),
            replicate_model=get("REPLICATE_MODEL", DEFAULT_MODEL),
            start_date=get("PRODUCT_IMAGES_START_DATE", DEFAULT_START_DATE),
            embeddings_log=get("REPLICATE_EMBEDDINGS_LOG", DEFAULT_EMBEDDINGS_LOG),
            chunk_size=_positive_int(environ, "REPLICATE_CHUNK_SIZE", 50),
            max_attempts=_positive_int(environ, "REPLICATE_MAX_ATTEMPTS", 3),
            retry_delay_seconds=float(_positive_int(environ, "REPLICATE_RETRY_DELAY_SECONDS", 60)),
            max_predictions_per_minute=_positive_int(environ, "REPLICATE_MAX_PREDICTIONS_PER_MINUTE", 600),
            max_in_flight=_positive_int(environ, "REPLICATE_MAX_IN_FLIGHT", 16),
            batch_size=_positive_int(environ, "REPLICATE_BATCH_SIZE", 50),
            prediction_timeout_seconds=float(_positive_int(environ, "REPLICATE_PREDICTION_TIMEOUT", 120)),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            dt.date.fromisoformat(self.start_date)
        except ValueError:
            raise SettingsError(
                f"PRODUCT_IMAGES_START_DATE={self.start_date!r} is not a date: use YYYY-MM-DD, e.g. 2024-01-01"
            ) from None
        for name, url in (("REPLICATE_BASE_URL", self.replicate_base_url), ("IMAGE_BASE_URL", self.image_base_url)):
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise SettingsError(f"{name}={url!r} is not an http(s) URL: set it to e.g. https://host/path")
        if "://" not in self.database_url:
            raise SettingsError(
                f"DATABASE_URL={self.database_url!r} is not a SQLAlchemy URL: use e.g. "
                "mysql+pymysql://user:pass@host/shop, postgresql+psycopg2://user@host/shop or sqlite:///shop.db"
            )


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"{name}={raw!r} must be a positive whole number (default {default})")
    return value
