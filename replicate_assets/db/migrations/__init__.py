"""Our tables' versioned history, kept by Alembic in the shop database (table `replicate_assets_version`).

- `version(schema)`: the revision the database records, the one this release needs, and which of our tables exist.
- `require(schema, create)`: returns when the database is at this release's revision; a fresh database (none of our
  tables) is created there when `create`; anything else raises `SchemaVersionError`, one line saying what to run.
- `move` (upgrade or roll back): under a lock (PostgreSQL advisory lock, MySQL GET_LOCK, SQLite BEGIN IMMEDIATE), so two
  processes never migrate at once; on SQLite and PostgreSQL a migration commits whole or not at all.
- `sql`: the DDL `move` would run on this database, printed for review; the database is only read.

Revisions live in `versions/`; each step looks at the database first (`steps`), so databases made by releases
before this history existed are adopted: what exists is kept, what is missing is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from replicate_assets.db.engine import CatalogueError

if TYPE_CHECKING:
    from replicate_assets.db.schema import Schema

VERSION_TABLE = "replicate_assets_version"
HERE = Path(__file__).parent
LOCK = "replicate_assets_migrate:"  # MySQL's GET_LOCK names are server-wide: the database's name is added
LOCK_KEY = 0x5EA5E7  # pg_advisory_xact_lock's key for our migrations
MIGRATE = "replicate-assets migrate"
REVIEW = "replicate-assets migrate --sql"


class SchemaVersionError(CatalogueError):
    """Our tables are not at the revision this release needs; the message says which command to run."""


@dataclasses.dataclass(frozen=True)
class Version:
    current: str | None  # what the database records (None: nothing recorded)
    head: str  # what this release needs
    ours: tuple[str, ...]  # our tables that exist

    @property
    def fresh(self) -> bool:
        return self.current is None and not self.ours

    @property
    def ready(self) -> bool:
        return self.current == self.head

    def problem(self) -> str | None:
        """One line when the database is neither at this release's revision nor fresh."""
        if self.ready or self.fresh:
            return None
        if self.current is None:
            return (
                f"the shop database holds tables of an earlier release of replicate_assets ({', '.join(self.ours)}) "
                f"and no schema version; this release needs revision {self.head}: run `{MIGRATE}` (review the DDL "
                f"first with `{REVIEW}`)"
            )
        if self.current in known():
            return (
                f"the shop database is at schema revision {self.current}, this release needs {self.head}: run "
                f"`{MIGRATE}` (review the DDL first with `{REVIEW}`)"
            )
        return (
            f"the shop database is at schema revision {self.current}, which this release does not know (it needs "
            f"{self.head}): a newer release upgraded it; run that release, or roll the database back with it "
            f"(`{MIGRATE} --to {self.head}`)"
        )


@functools.cache
def _script() -> ScriptDirectory:
    """The revisions of this release, read once a process: `connect()` asks for the head on every call."""
    return ScriptDirectory(str(HERE))


def head() -> str:
    return _script().get_current_head() or "base"


def known() -> dict[str, str]:
    """Every revision of this release, oldest first, with its one-line title."""
    revisions = reversed(list(_script().walk_revisions()))
    return {r.revision: (r.doc or "").splitlines()[0] for r in revisions}


def version(schema: Schema) -> Version:
    with schema.engine.connect() as conn:
        return _version_on(conn, schema)


def require(schema: Schema, create: bool) -> Version:
    """Return when our tables are at this release's revision (or fresh, for a reader); else one line says what to
    do. A writer (`create`) makes a fresh database's tables first. A state that looks wrong is looked at again
    under the migration lock: another process may be creating the tables right now."""
    found = version(schema)
    if found.ready or (found.fresh and not create):
        return found
    with _locked(schema) as conn:
        found = _version_on(conn, schema)
        if found.fresh and create:
            _run(schema, conn, lambda config: command.upgrade(config, "head"))
            return _version_on(conn, schema)
    problem = found.problem()
    if problem:
        raise SchemaVersionError(problem)
    return found


def target(found: Version, wanted: str | None) -> str:
    """The revision `migrate --to` names (default: this release's), checked: only revisions this release knows,
    and only from one it knows (a newer release's database is rolled back by that release)."""
    revisions = known()
    if found.current is not None and found.current not in revisions:
        raise SchemaVersionError(found.problem() or found.current)
    if wanted is None:
        return found.head
    if wanted not in revisions:
        listed = ", ".join(f"{rev} ({title})" for rev, title in revisions.items())
        raise SchemaVersionError(f"no schema revision {wanted!r} in this release: it knows {listed}")
    return wanted


def _is_upgrade(found: Version, to: str) -> bool:
    order = list(known())
    return found.current is None or order.index(to) >= order.index(found.current)


def move(schema: Schema, to: str) -> tuple[Version, Version]:
    """Upgrade or roll back our tables to `to`; returns the versions before and after."""
    with _locked(schema) as conn:
        before = _version_on(conn, schema)
        if _is_upgrade(before, to):
            _run(schema, conn, lambda config: command.upgrade(config, to))
        else:
            _run(schema, conn, lambda config: command.downgrade(config, to))
        return before, _version_on(conn, schema)


def sql(schema: Schema, found: Version, to: str) -> str:
    """The DDL that `move` to `to` would run on this database, as SQL text; nothing is changed."""
    buffer = io.StringIO()
    span = f"{found.current}:{to}" if found.current else to
    with schema.engine.connect() as conn:
        if _is_upgrade(found, to):
            _run(schema, conn, lambda config: command.upgrade(config, span, sql=True), buffer)
        else:
            _run(schema, conn, lambda config: command.downgrade(config, span, sql=True), buffer)
        conn.rollback()
    return buffer.getvalue()


def _version_on(conn: sa.Connection, schema: Schema) -> Version:
    current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    existing = set(sa.inspect(conn).get_table_names())
    return Version(current, head(), tuple(t.name for t in schema.ours if t.name in existing))


def _run(schema: Schema, conn: sa.Connection, action: Any, buffer: io.StringIO | None = None) -> None:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes.update(schema=schema, connection=conn, buffer=buffer)
    action(config)


def configure(context: Any) -> None:
    """env.py's body: run the revisions on the connection `_run` passed (or print them, for `--sql`)."""
    attributes = context.config.attributes
    conn: sa.Connection = attributes["connection"]
    options = {
        "version_table": VERSION_TABLE,
        "target_metadata": attributes["schema"].metadata,
        "include_object": lambda _object, name, kind, *_: kind != "table" or name in ours(attributes["schema"]),
        "render_as_batch": conn.dialect.name == "sqlite",
        "compare_type": True,
    }
    if context.is_offline_mode():
        context.configure(
            dialect_name=conn.dialect.name,
            as_sql=True,
            output_buffer=attributes["buffer"],
            literal_binds=True,
            **options,
        )
    else:
        context.configure(connection=conn, **options)
    with context.begin_transaction():
        context.run_migrations()


def ours(schema: Schema) -> set[str]:
    return {table.name for table in schema.ours}


@contextlib.contextmanager
def _locked(schema: Schema) -> Iterator[sa.Connection]:
    """One transaction holding the migration lock; SQLite's is a write lock for the whole migration."""
    dialect = schema.dialect
    if dialect == "sqlite":
        with _sqlite_engine(schema.engine.url).begin() as conn:
            yield conn
        return
    if dialect == "postgresql":
        with schema.engine.begin() as conn:  # the lock ends with the transaction: after its commit
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            yield conn
        return
    with schema.engine.connect() as conn:  # MySQL: a session lock, released only after the commit
        got = conn.execute(sa.text("SELECT GET_LOCK(CONCAT(:name, DATABASE()), 600)"), {"name": LOCK}).scalar()
        conn.commit()
        if got != 1:
            raise CatalogueError("another process has been migrating the shop database for 10 minutes: try again")
        try:
            with conn.begin():
                yield conn
        finally:
            conn.execute(sa.text("SELECT RELEASE_LOCK(CONCAT(:name, DATABASE()))"), {"name": LOCK})
            conn.commit()


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    """A connection of its own whose transaction SQLite really begins (BEGIN IMMEDIATE), so DDL commits whole."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _manual(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver begins nothing on its own

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
