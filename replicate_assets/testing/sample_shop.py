"""A sample shop for the demo and the tests: Laravel-shaped tables, generated PNG images, a local image server."""

from __future__ import annotations

import datetime as dt
import random
import struct
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from replicate_assets.testing.emulator.server import QuietServer
from replicate_assets.testing.semantics import CATEGORIES

NAMES = list(CATEGORIES)

# How a shop's timestamp columns may be declared (Laravel: timestamps(), timestampsTz(); SQLite keeps text).
TIMESTAMP_TYPES: dict[str, sa.types.TypeEngine] = {
    "naive": sa.DateTime(),  # PostgreSQL timestamp, MySQL datetime, SQLite text written by SQLAlchemy
    "aware": sa.DateTime(timezone=True).with_variant(mysql.TIMESTAMP(), "mysql"),  # timestamptz; MySQL timestamp
    "text": sa.Text(),  # SQLite text in Laravel's format
}


def shop_metadata(timestamps: str = "naive", foreign_keys: bool = True) -> sa.MetaData:
    """`products` and `product_images` as a Laravel migration makes them (BIGINT UNSIGNED ids on MySQL)."""
    metadata = sa.MetaData()
    id_type = sa.BigInteger().with_variant(sa.Integer, "sqlite").with_variant(mysql.BIGINT(unsigned=True), "mysql")
    stamp = TIMESTAMP_TYPES[timestamps]
    sa.Table(
        "products",
        metadata,
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", stamp),
        sa.Column("updated_at", stamp),
        sa.Column("deleted_at", stamp),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    product = [sa.ForeignKey("products.id", ondelete="CASCADE")] if foreign_keys else []
    sa.Table(
        "product_images",
        metadata,
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("product_id", id_type, *product, nullable=False),
        sa.Column("path", sa.String(2048)),
        sa.Column("created_at", stamp, nullable=True),
        sa.Column("updated_at", stamp, nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    return metadata


def create_shop_tables(engine: sa.Engine, reset: bool = False, **shape: Any) -> None:
    """Create the shop's tables; with reset, drop them and ours first (a fresh sample shop)."""
    if reset:
        with engine.begin() as conn:
            for name in ("product_embeddings", "clip_embedding_outcomes", "product_images", "products"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    shop_metadata(**shape).create_all(engine)


def laravel(moment: dt.datetime) -> str:
    """A timestamp as Laravel writes it into a text column."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def png(seed: int, size: int = 16, category: str | None = None) -> bytes:
    """A small valid PNG whose pixels depend on `seed`: distinct seeds give distinct bytes. With a `category` (one of
    semantics.CATEGORIES) it is a square of the category's colour, speckled by the seed; else random noise."""
    rng = random.Random(seed)
    if category is None:
        pixel = lambda: [rng.randrange(256) for _ in range(3)]  # noqa: E731
    else:
        colour = CATEGORIES[category]
        pixel = lambda: [min(255, max(0, c + rng.randrange(-24, 25))) for c in colour]  # noqa: E731
    rows = b"".join(b"\x00" + bytes(v for _ in range(size) for v in pixel()) for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class ImageServer:
    """Serves `images` (path -> bytes) over HTTP on 127.0.0.1; any other path answers 404."""

    def __init__(self, images: dict[str, bytes] | None = None, port: int = 0):
        self.images: dict[str, bytes] = images if images is not None else {}
        self.statuses: dict[str, int] = {}  # path -> the status it answers instead (403, 500, ...)
        store, statuses = self.images, self.statuses

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = unquote(self.path.split("?")[0]).lstrip("/")
                data = store.get(path) if path not in statuses else None
                self.send_response(statuses.get(path, 200 if data else 404))
                self.send_header("Content-Type", "image/png" if data else "text/plain")
                body = data or b"not found"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = QuietServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, name="image-server", daemon=True).start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class SampleShop:
    """What `build_sample_shop` made, so callers can check the outcome."""

    products: int = 0
    images: int = 0
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    broken: dict[int, str] = field(default_factory=dict)  # product_image_id -> why it cannot be embedded
    products_without_images: int = 0
    categories: dict[int, str] = field(default_factory=dict)  # product_id -> its category (semantics.CATEGORIES)


def build_sample_shop(
    engine: sa.Engine,
    server: ImageServer,
    *,
    products: int = 240,
    days: int = 30,
    today: dt.date | None = None,
    seed: int = 7,
    timestamps: str = "naive",
    foreign_keys: bool = True,
) -> SampleShop:
    """Fill a fresh shop: products with 1-3 images over `days` days ending `today`; a few images are broken.

    Each product belongs to a category (round robin) that names it and colours its images.

    Half the paths are relative (Laravel's public storage), so IMAGE_BASE_URL must be the server's base URL.
    """
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    today = today or now.date()
    create_shop_tables(engine, reset=True, timestamps=timestamps, foreign_keys=foreign_keys)
    tables = shop_metadata(timestamps).tables
    shop = SampleShop(first_day=today - dt.timedelta(days=days - 1), last_day=today)
    product_rows, image_rows = [], []
    image_id = 0
    for product_id in range(1, products + 1):
        day = shop.first_day + dt.timedelta(days=rng.randrange(days))
        created = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60), rng.randrange(60)))
        created = min(created, now)  # a shop's rows are never dated in the future
        stamp = laravel(created) if timestamps == "text" else created
        category = NAMES[product_id % len(NAMES)]
        shop.categories[product_id] = category
        product_rows.append(
            {
                "id": product_id,
                "name": f"{category.capitalize()} {product_id}",
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        if product_id % 40 == 0:
            shop.products_without_images += 1
            continue
        for position in range(rng.randint(1, 3)):
            image_id += 1
            path = f"products/{product_id}/{position}.png"
            server.images[path] = png(image_id, category=category)
            if image_id % 2:
                path = f"{server.base_url}/{path}"
            image_rows.append(
                {"id": image_id, "product_id": product_id, "path": path, "created_at": stamp, "updated_at": stamp}
            )
    # Deliberately broken rows, as a real catalogue has them.
    breakages = {
        5: ("products/5/missing.png", "dead URL (404)"),
        57: ("", "empty path"),
        123: ("ftp://files.example/x.png", "not http(s)"),
        201: (None, "null path"),
        333: (f"{server.base_url}/gone/333.png?signature=s3cr3t", "dead signed URL (404)"),
    }
    for index, (path, why) in breakages.items():
        if index <= len(image_rows):
            image_rows[index - 1]["path"] = path
            shop.broken[image_rows[index - 1]["id"]] = why
    # Two products share another's image URL: it is embedded (and paid for) once.
    for index in (10, 11):
        if index < len(image_rows):
            image_rows[index]["path"] = image_rows[2]["path"]
    with engine.begin() as conn:
        conn.execute(tables["products"].insert(), product_rows)
        conn.execute(tables["product_images"].insert(), image_rows)
        if engine.dialect.name == "postgresql":  # explicit ids do not move PostgreSQL's sequences
            for name in ("products", "product_images"):
                conn.execute(
                    sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT MAX(id) FROM {name}))")
                )
    shop.products, shop.images = len(product_rows), len(image_rows)
    return shop
