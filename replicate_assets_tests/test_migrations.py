"""Versioned migrations on SQLite, PostgreSQL and MariaDB: databases earlier releases made are upgraded in place
(built from their DDL snapshots and rows in data/schemas, not from the old code), the DDL can be read first, the
declared tables and the migrations never drift, the last revision rolls back, and a database at another revision
stops every run, sensor tick and command with one line before anything is paid."""

import datetime as dt
import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import DAYS, TODAY, chain_command, definitions, run

from replicate_assets.db import connect, engine_for, migrations
from replicate_assets.defs.resources import ShopDatabase
from replicate_assets.testing.sample_shop import build_sample_shop

SNAPSHOTS = Path(__file__).parent / "data" / "schemas"
OLD_IMAGES = "http://127.0.0.1:18765"  # where the first release's sample shop served its images (nothing listens now)
OLD_TABLES = ("products", "product_images", "clip_embedding_outcomes", "product_embeddings")
HEAD = migrations.head()


def load_snapshot(url: str, shape: str) -> dict[str, list[dict]]:
    """A shop as an earlier release left it: that release's DDL on this backend, then its rows."""
    kind = sa.make_url(url).get_backend_name()
    ddl = (SNAPSHOTS / shape / f"{kind}.sql").read_text()
    with gzip.open(SNAPSHOTS / "first_release_rows.json.gz", "rt") as file:
        rows = json.load(file)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in ddl.split(";\n"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    metadata = sa.MetaData()
    with engine.begin() as conn:
        for name in OLD_TABLES:
            table = sa.Table(name, metadata, autoload_with=conn)
            conn.execute(table.insert(), [typed(table, row) for row in rows[name]])
        if kind == "postgresql":  # explicit ids do not move the sequences
            for name in ("products", "product_images", "product_embeddings"):
                conn.execute(
                    sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT MAX(id) FROM {name}))")
                )
    engine.dispose()
    return rows


def typed(table: sa.Table, row: dict) -> dict:
    """A dumped row (text timestamps, JSON as text) as the reflected columns take it."""
    values = {}
    for name, value in row.items():
        kind = table.c[name].type
        if value is not None and isinstance(kind, sa.DateTime):
            value = dt.datetime.fromisoformat(value)
        elif value is not None and isinstance(kind, sa.JSON):
            value = json.loads(value)
        values[name] = value
    return values


def described(url: str) -> dict:
    """Every table's columns (name, type, nullable) and indexes, as reflected."""
    inspector = sa.inspect(sa.create_engine(url))
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
        )
        for table in sorted(inspector.get_table_names())
    }


def drift(url: str) -> list:
    """What autogenerate finds between our declared tables and the database (the shop's tables left out)."""
    schema = connect(url)
    ours = migrations.ours(schema)
    with schema.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "include_object": lambda _o, name, kind, *_: kind != "table" or name in ours},
        )
        return compare_metadata(context, schema.metadata)


def vector(value) -> list[float] | None:
    """A JSON column's value as read (parsed on PostgreSQL, text elsewhere)."""
    return json.loads(value) if isinstance(value, str) else value


def assert_kept(url: str, rows: dict[str, list[dict]]) -> None:
    """Every embedding and outcome the snapshot holds is still there, unchanged."""
    with sa.create_engine(url).connect() as conn:
        embeddings = {
            r.product_image_id: r
            for r in conn.execute(
                sa.text("SELECT product_image_id, product_id, model, embedding FROM product_embeddings")
            )
        }
        outcomes = {
            r.product_image_id: r
            for r in conn.execute(sa.text("SELECT product_image_id, status, embedding FROM clip_embedding_outcomes"))
        }
    for old in rows["product_embeddings"]:
        new = embeddings[old["product_image_id"]]
        assert (new.product_id, new.model) == (old["product_id"], old["model"])
        assert vector(new.embedding) == json.loads(old["embedding"])
    for old in rows["clip_embedding_outcomes"]:
        new = outcomes[old["product_image_id"]]
        assert (new.status, vector(new.embedding)) == (old["status"], json.loads(old["embedding"]))


def recorded(url: str) -> str | None:
    with sa.create_engine(url).connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": migrations.VERSION_TABLE}).get_current_revision()


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.fixture
def old_env(env, shop_url):
    return {**env, "DATABASE_URL": shop_url, "IMAGE_BASE_URL": OLD_IMAGES}


def test_a_fresh_database_is_made_at_the_latest_revision_and_matches_the_declared_tables(shop_url, shop):
    connect(shop_url).ensure_tables()  # what the first run does
    assert recorded(shop_url) == HEAD
    assert drift(shop_url) == []
    with engine_for(shop_url).begin() as conn:  # the comparison sees a difference when there is one
        conn.execute(
            sa.text(
                "DROP INDEX ix_clip_embedding_outcomes_claimed_by"
                + (" ON clip_embedding_outcomes" if sa.make_url(shop_url).get_backend_name() == "mysql" else "")
            )
        )
    assert [d[0] for d in drift(shop_url)] == ["add_index"]


@pytest.mark.parametrize("shape", ["first_release", "today"])
def test_an_earlier_release_is_upgraded_in_place_and_pays_nothing_again(shop_url, shape, old_env, fresh_emulator):
    rows = load_snapshot(shop_url, shape)
    old_tables = ", ".join(t for t in ("clip_embedding_outcomes", "product_embeddings"))

    check = run(["replicate-assets", "migrate", "--check"], old_env)
    line = one_line(check.stderr)
    assert (
        check.returncode == 1
        and "earlier release" in line
        and f"needs revision {HEAD}: run `replicate-assets migrate`" in line
    )
    status = run(["replicate-assets", "status"], old_env)
    assert status.returncode == 1 and one_line(status.stderr) == line
    refused = run(chain_command(DAYS[0], DAYS[-1]), old_env)
    assert refused.returncode != 0 and line.removeprefix("error: ") in refused.stdout + refused.stderr
    assert fresh_emulator.creates() == []

    before = described(shop_url)
    review = run(["replicate-assets", "migrate", "--sql"], old_env)
    assert review.returncode == 0, review.stderr
    assert f"CREATE TABLE {migrations.VERSION_TABLE}" in review.stdout
    if shape == "first_release":
        assert "ADD COLUMN claimed_by" in review.stdout and "CREATE TABLE product_similarities" in review.stdout
    else:  # today's tables are in shape: the version is recorded (and on MySQL, `migrate`'s DATETIME and FLOAT
        # become the DATETIME(6) and DOUBLE a table made in a Dagster run had)
        alters = [line for line in review.stdout.splitlines() if line.startswith("ALTER TABLE")]
        assert all(" ADD " not in line and ("DATETIME(6)" in line or "DOUBLE" in line) for line in alters), alters
        assert bool(alters) == (sa.make_url(shop_url).get_backend_name() == "mysql")
        assert review.stdout.count("CREATE TABLE") == 1
    assert described(shop_url) == before  # read, not changed

    upgraded = run(["replicate-assets", "migrate"], old_env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"adopted tables an earlier release made: {old_tables}" in upgraded.stdout
    assert f"schema revision none -> {HEAD}" in upgraded.stdout
    assert recorded(shop_url) == HEAD
    assert drift(shop_url) == []
    assert_kept(shop_url, rows)

    again = run(chain_command(DAYS[0], DAYS[-1]), old_env)
    assert again.returncode == 0, again.stderr[-3000:]
    embedded = {r["image_url"] for r in rows["clip_embedding_outcomes"] if r["status"] == "indexed"}
    paid = Counter(fresh_emulator.creates_per_input())
    assert embedded and not set(paid) & embedded  # only an image that failed may be tried again
    assert_kept(shop_url, rows)
    assert run(["replicate-assets", "migrate", "--check"], old_env).returncode == 0


def test_the_last_revision_rolls_back_and_forward_keeping_every_embedding(shop_url, old_env):
    rows = load_snapshot(shop_url, "first_release")
    assert run(["replicate-assets", "migrate"], old_env).returncode == 0
    previous = list(migrations.known())[-2]

    review = run(["replicate-assets", "migrate", "--to", previous, "--sql"], old_env)
    assert review.returncode == 0 and "DROP TABLE product_similarities" in review.stdout, review.stderr
    assert recorded(shop_url) == HEAD
    down = run(["replicate-assets", "migrate", "--to", previous], old_env)
    assert down.returncode == 0 and f"schema revision {HEAD} -> {previous}" in down.stdout, down.stderr
    assert recorded(shop_url) == previous
    tables = described(shop_url)
    assert "product_similarities" not in tables
    assert "claimed_by" not in [column for column, _, _ in tables["clip_embedding_outcomes"][0]]
    assert_kept(shop_url, rows)
    behind = run(["replicate-assets", "status"], old_env)
    assert f"is at schema revision {previous}, this release needs {HEAD}" in one_line(behind.stderr)

    assert run(["replicate-assets", "migrate"], old_env).returncode == 0
    assert recorded(shop_url) == HEAD and drift(shop_url) == []
    assert_kept(shop_url, rows)


@pytest.fixture
def sqlite_shop(sqlite_url, image_server):
    return build_sample_shop(engine_for(sqlite_url), image_server, products=10, days=3, today=TODAY)


def test_a_database_a_newer_release_upgraded_stops_runs_sensors_and_commands(
    sqlite_url, sqlite_shop, env, fresh_emulator
):
    assert run(["replicate-assets", "migrate"], env).returncode == 0
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0099'"))

    status = run(["replicate-assets", "status"], env)
    line = one_line(status.stderr)
    assert status.returncode == 1 and f"revision 0099, which this release does not know (it needs {HEAD})" in line
    migrate = run(["replicate-assets", "migrate"], env)
    assert migrate.returncode == 1 and one_line(migrate.stderr) == line
    refused = run(chain_command(DAYS[0], DAYS[-1]), env)
    assert refused.returncode != 0 and line.removeprefix("error: ") in refused.stdout + refused.stderr
    assert fresh_emulator.creates() == []
    sensor = next(s for s in definitions().sensors if s.name == "new_product_images_sensor")
    with pytest.raises(Exception, match="revision 0099, which this release does not know"):
        sensor(dg.build_sensor_context(resources={"shop": ShopDatabase(url=sqlite_url)}))


def test_a_wrong_revision_is_named_with_the_ones_this_release_knows(sqlite_url, sqlite_shop, env):
    wrong = run(["replicate-assets", "migrate", "--to", "nope"], env)
    line = one_line(wrong.stderr)
    assert wrong.returncode == 1 and "no schema revision 'nope' in this release: it knows 0001 (" in line
    assert not sa.inspect(engine_for(sqlite_url)).has_table(migrations.VERSION_TABLE)


FIRST_USE = """
import sys
from replicate_assets.db import connect
schema = connect(sys.argv[1])
if sys.argv[2] == "writer":
    schema.ensure_tables()
for _ in range(30):
    connect(sys.argv[1])
"""


def test_many_processes_meeting_a_fresh_database_agree_on_its_tables(shop_url, shop):
    """Writers make the tables under the migration lock while readers look: no process ever sees a half-made
    history (on MySQL, DDL commits as it goes; the lock is released only after the version's commit)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USE, shop_url, "writer" if n % 2 == 0 else "reader"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, [e.strip().splitlines()[-1:] for e in errors if e.strip()]
    assert recorded(shop_url) == HEAD and drift(shop_url) == []
