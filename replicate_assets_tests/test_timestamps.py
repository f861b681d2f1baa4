"""Timestamps compare as instants on every dialect and column type: a run after a run pays for nothing.

Laravel's `timestamps()` and `timestampsTz()` give `timestamp` / `timestamptz` on PostgreSQL, `datetime` /
`timestamp` on MySQL and MariaDB, and SQLite keeps text. The image's `updated_at` is stored in our outcome and
compared with the shop's on every run: if the two never compare equal, every run re-embeds every image.
"""

import pytest
import sqlalchemy as sa
from conftest import DAYS, TODAY, drop_server_database, make_resources, materialize_chain, server_database

from replicate_assets.db import engine_for
from replicate_assets.testing.sample_shop import build_sample_shop

KINDS = [
    ("sqlite", "naive"),  # text written by SQLAlchemy into a DATETIME column
    ("sqlite", "text"),  # text in Laravel's format in a TEXT column
    pytest.param("postgresql", "naive", marks=pytest.mark.postgres),  # timestamp
    pytest.param("postgresql", "aware", marks=pytest.mark.postgres),  # timestamptz
    pytest.param("mariadb", "naive", marks=pytest.mark.mariadb),  # datetime
    pytest.param("mariadb", "aware", marks=pytest.mark.mariadb),  # timestamp
]


@pytest.fixture
def database(request, tmp_path):
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.db'}"
        return
    url = server_database(kind)
    yield url
    drop_server_database(url)


@pytest.mark.parametrize("database, timestamps", KINDS, indirect=["database"])
def test_a_second_run_pays_for_nothing(database, timestamps, image_server, fresh_emulator, tmp_path):
    shop = build_sample_shop(
        engine_for(database), image_server, products=12, days=3, today=TODAY, timestamps=timestamps
    )
    resources = make_resources(database, image_server, fresh_emulator, tmp_path)
    first = materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    sent = len(fresh_emulator.creates())
    assert sent > 0
    second = materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    dead = sum(1 for why in shop.broken.values() if "404" in why)
    assert len(fresh_emulator.creates()) - sent == dead  # only the dead URL is tried again
    found = second.asset_materializations_for_node("product_images")[0].metadata
    assert found["images_marked_pending"].value == dead
    assert found["images_up_to_date"].value == shop.images - len(shop.broken)
    with engine_for(database).connect() as conn:
        stored = conn.execute(sa.text("SELECT COUNT(*) FROM product_embeddings")).scalar_one()
    assert stored == shop.images - len(shop.broken)
    assert first.success and second.success
