"""Alembic's entry point: the runner in `replicate_assets.db.migrations` passes the connection and the schema."""

from alembic import context

from replicate_assets.db.migrations import configure

configure(context)
