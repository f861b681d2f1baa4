"""Configuration from environment variables: one place, validated, with the README's defaults.

Nothing reads the environment at import: `Settings.from_env()` runs when the definitions are built or a command
starts, and a bad value raises SettingsError with one line that names the variable and the fix (never a secret).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from replicate_assets.replicate import ClientOptions

CLIENT = ClientOptions()
DEFAULT_DATABASE_URL = "sqlite:///data/shop.db"
DEFAULT_START_DATE = "2024-01-01"
DEFAULT_EMBEDDINGS_LOG = "logs/replicate_embeddings.log"
DEFAULT_INDEX_DIR = "data/index"
DEFAULT_EXPORT_DIR = "data/export"
COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Number:
    """A numeric setting: its variable, default and bounds, declared once for the environment, the resources
    (their run config) and the README."""

    variable: str
    default: int
    low: int
    high: int
    meaning: str

    def field(self, kind: type = int) -> Any:
        """The resource field of this setting: the same default and bounds, checked when a run starts."""
        import pydantic

        return pydantic.Field(default=kind(self.default), ge=self.low, le=self.high, description=self.meaning)


NUMBERS = {
    "chunk_size": Number("REPLICATE_CHUNK_SIZE", 50, 1, 10_000, "images read, sent and stored together"),
    "max_attempts": Number("REPLICATE_MAX_ATTEMPTS", 3, 1, 100, "attempts per image before it stays failed"),
    "retry_delay_seconds": Number("REPLICATE_RETRY_DELAY_SECONDS", 60, 1, 86_400, "first wait before a retry"),
    "max_predictions_per_minute": Number(
        "REPLICATE_MAX_PREDICTIONS_PER_MINUTE", CLIENT.max_predictions_per_minute, 1, 100_000, "creates a minute"
    ),
    "max_in_flight": Number("REPLICATE_MAX_IN_FLIGHT", CLIENT.max_in_flight, 1, 256, "requests in flight at once"),
    "batch_size": Number("REPLICATE_BATCH_SIZE", CLIENT.batch_size, 1, 1_000, "images per clip-features prediction"),
    "prediction_timeout_seconds": Number(
        "REPLICATE_PREDICTION_TIMEOUT",
        int(CLIENT.prediction_timeout_seconds),
        1,
        1_800,
        "seconds a prediction may take",
    ),
    "sensor_interval_seconds": Number(
        "SENSOR_INTERVAL_SECONDS",
        60,
        5,
        3_600,
        "seconds between new-image ticks (missing: 5x; automation: 1/2)",
    ),
    "similar_products_k": Number("SIMILAR_PRODUCTS_K", 20, 1, 1_000, "products in each similarity list"),
    "similarity_max_lag_minutes": Number(
        "SIMILARITY_MAX_LAG_MINUTES", 60, 1, 100_000, "minutes the lists may lag behind the embeddings (WARN beyond)"
    ),
    "search_queries_per_minute": Number(
        "SEARCH_QUERIES_PER_MINUTE", 30, 1, 100_000, "new (paid) search queries a minute"
    ),
}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    image_base_url: str | None = None
    replicate_base_url: str = CLIENT.base_url
    replicate_model: str = CLIENT.model
    start_date: str = DEFAULT_START_DATE
    embeddings_log: str = DEFAULT_EMBEDDINGS_LOG
    chunk_size: int = NUMBERS["chunk_size"].default
    max_attempts: int = NUMBERS["max_attempts"].default
    retry_delay_seconds: float = NUMBERS["retry_delay_seconds"].default
    max_predictions_per_minute: int = CLIENT.max_predictions_per_minute
    max_in_flight: int = CLIENT.max_in_flight
    batch_size: int = CLIENT.batch_size
    prediction_timeout_seconds: float = CLIENT.prediction_timeout_seconds
    image_path_column: str = "path"
    image_created_at_column: str = "created_at"
    image_updated_at_column: str = "updated_at"
    similar_products_k: int = NUMBERS["similar_products_k"].default
    sensor_interval_seconds: int = NUMBERS["sensor_interval_seconds"].default
    similarity_max_lag_minutes: int = NUMBERS["similarity_max_lag_minutes"].default
    similarity_index_dir: str = DEFAULT_INDEX_DIR
    embeddings_export_dir: str = DEFAULT_EXPORT_DIR
    search_api_key: str | None = None
    search_queries_per_minute: int = NUMBERS["search_queries_per_minute"].default

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read and validate every setting; raises SettingsError naming the bad variable."""

        def get(name: str, default: str | None) -> str | None:
            value = environ.get(name, "").strip()
            return value or default

        settings = cls(
            database_url=get("DATABASE_URL", DEFAULT_DATABASE_URL),
            image_base_url=get("IMAGE_BASE_URL", None),
            replicate_base_url=get("REPLICATE_BASE_URL", CLIENT.base_url).rstrip("/"),
            replicate_model=get("REPLICATE_MODEL", CLIENT.model),
            start_date=get("PRODUCT_IMAGES_START_DATE", DEFAULT_START_DATE),
            embeddings_log=get("REPLICATE_EMBEDDINGS_LOG", DEFAULT_EMBEDDINGS_LOG),
            **{name: _number(environ, name) for name in NUMBERS},
            image_path_column=get("SHOP_IMAGE_PATH_COLUMN", "path"),
            image_created_at_column=get("SHOP_IMAGE_CREATED_AT_COLUMN", "created_at"),
            image_updated_at_column=get("SHOP_IMAGE_UPDATED_AT_COLUMN", "updated_at"),
            similarity_index_dir=get("SIMILARITY_INDEX_DIR", DEFAULT_INDEX_DIR),
            embeddings_export_dir=get("EMBEDDINGS_EXPORT_DIR", DEFAULT_EXPORT_DIR),
            search_api_key=get("SEARCH_API_KEY", None),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            start = dt.date.fromisoformat(self.start_date)
        except ValueError:
            raise SettingsError(
                f"PRODUCT_IMAGES_START_DATE={self.start_date!r} is not a date: use YYYY-MM-DD, e.g. 2024-01-01"
            ) from None
        if start > dt.datetime.now(dt.UTC).date():
            raise SettingsError(
                f"PRODUCT_IMAGES_START_DATE={self.start_date} is in the future: no day could be embedded; use the "
                "day of the shop's first image"
            )
        for name, url in (("REPLICATE_BASE_URL", self.replicate_base_url), ("IMAGE_BASE_URL", self.image_base_url)):
            if url is None:
                continue
            parts = urlsplit(url)
            if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
                raise SettingsError(f"{name}={_plain(url)!r} is not an http(s) URL: set it to e.g. https://host/path")
            try:
                parts.port  # noqa: B018 - raises for a port that is not a number
            except ValueError:
                raise SettingsError(f"{name}={_plain(url)!r} has a port that is not a number") from None
        _check_database_url(self.database_url)
        for name, value in (
            ("SHOP_IMAGE_PATH_COLUMN", self.image_path_column),
            ("SHOP_IMAGE_CREATED_AT_COLUMN", self.image_created_at_column),
            ("SHOP_IMAGE_UPDATED_AT_COLUMN", self.image_updated_at_column),
        ):
            if not COLUMN_NAME.fullmatch(value):
                raise SettingsError(f"{name}={value!r} is not a column name: letters, digits and _ only")


def _plain(url: str) -> str:
    """A URL without userinfo or query, for messages."""
    from replicate_assets.urls import shown

    return shown(url)


def _check_database_url(url: str) -> None:
    from replicate_assets.db import masked

    example = "use e.g. mysql+pymysql://user:pass@host/shop, postgresql+psycopg2://user@host/shop or sqlite:///shop.db"
    if "://" not in url:
        raise SettingsError(f"DATABASE_URL is not a SQLAlchemy URL ({len(url)} characters, no scheme): {example}")
    scheme = url.split("://", 1)[0].lower()
    known = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
    if scheme.split("+")[0] not in known:
        raise SettingsError(f"DATABASE_URL uses {scheme}://, which is not supported: {example}")
    if masked(url) == "(not a database URL)":
        raise SettingsError(
            f"DATABASE_URL could not be read as a database URL (a port that is not a number?): {example}"
        )
    charset = parse_qs(urlsplit(url).query).get("charset", [None])[-1]
    if charset and scheme.split("+")[0] in ("mysql", "mariadb"):
        from pymysql.charset import charset_by_name

        if charset_by_name(charset) is None:
            raise SettingsError(
                f"DATABASE_URL asks for charset={charset[:40]!r}, which MySQL does not know: use charset=utf8mb4"
            )


def _number(environ: Mapping[str, str], name: str) -> int:
    """A numeric setting from its variable: ASCII digits, within its bounds; its default when unset."""
    number = NUMBERS[name]
    raw = environ.get(number.variable, "").strip()
    if not raw:
        return number.default
    if not (raw.isascii() and raw.isdigit()):
        raise SettingsError(
            f"{number.variable}={raw[:40]!r} must be a positive whole number from {number.low} to {number.high} "
            f"(default {number.default})"
        )
    value = int(raw) if len(raw) <= 12 else number.high + 1
    if not number.low <= value <= number.high:
        raise SettingsError(
            f"{number.variable}={raw[:40]} is out of range: use a whole number from {number.low} to {number.high} "
            f"(default {number.default})"
        )
    return value
