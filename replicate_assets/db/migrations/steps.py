"""What the revisions share: the shop's id types, our table options, and steps that look before they change.

Every step reads the database as it is (also for `migrate --sql`, which prints and changes nothing) and emits
only what is missing or different, so a database any earlier release made, whole or half-made, is brought to the
same shape. What a step emits is remembered, so the printed DDL of a fresh database creates each table once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op


def _attributes() -> dict[str, Any]:
    return context.config.attributes


def dialect() -> str:
    return _attributes()["connection"].dialect.name


def shop_types() -> tuple[Any, Any, str]:
    """The shop's `products.id` type, its `product_images` id type and that id column's name."""
    schema = _attributes()["schema"]
    return schema.products.c.id.type, schema.image.id.type, schema.image.id.name


def table_options() -> dict[str, Any]:
    """MySQL/MariaDB: InnoDB, utf8mb4 in the shop table's collation (as `Schema` chose it)."""
    return dict(_attributes()["schema"].table_options)


def _inspector() -> sa.Inspector:
    return sa.inspect(_attributes()["connection"])  # a new one each time: nothing cached across steps


def _planned() -> dict[str, dict[str, dict[str, Any]]]:
    return _attributes().setdefault("planned", {})


def has_table(name: str) -> bool:
    return name in _planned() or _inspector().has_table(name)


def columns(name: str) -> dict[str, dict[str, Any]]:
    """The table's columns as reflected, and those a step before this one emitted (name, type, nullable)."""
    found = {c["name"]: c for c in _inspector().get_columns(name)} if _inspector().has_table(name) else {}
    return {**_planned().get(name, {}), **found}


def indexes(name: str) -> dict[str, list[str]]:
    """The table's indexes as reflected, and those a step before this one emitted."""
    planned = _attributes().setdefault("planned_indexes", {}).setdefault(name, {})
    real = _inspector().get_indexes(name) if _inspector().has_table(name) else []
    found = {**{i["name"]: list(i["column_names"]) for i in real}, **planned}
    return {index: cols for index, cols in found.items() if cols is not None}


def _plan_index(table: str, name: str, wanted: list[str] | None) -> None:
    planned = _attributes().setdefault("planned_indexes", {}).setdefault(table, {})
    planned[name] = wanted


def converge(name: str, wanted: list[sa.Column], wanted_indexes: dict[str, list[str]], **options: Any) -> None:
    """Create the table with its indexes, or add the columns it lacks and make its indexes as declared."""
    if not has_table(name):
        op.create_table(name, *wanted, *(sa.Index(i, *cols) for i, cols in wanted_indexes.items()), **options)
        _planned()[name] = _described(wanted)
        for index, cols in wanted_indexes.items():
            _plan_index(name, index, cols)
        return
    have = columns(name)
    missing = [column for column in wanted if column.name not in have]
    if missing:
        with op.batch_alter_table(name) as batch:
            for column in missing:
                batch.add_column(column)
        _planned().setdefault(name, {}).update(_described(missing))
    for index, cols in wanted_indexes.items():
        ensure_index(name, index, cols)


def _described(wanted: list[sa.Column]) -> dict[str, dict[str, Any]]:
    return {c.name: {"name": c.name, "type": c.type, "nullable": c.nullable} for c in wanted}


def ensure_index(table: str, name: str, wanted: list[str], unique: bool = False) -> None:
    """Create the index, or make it again where its columns differ (an index changed in a later release)."""
    found = indexes(table).get(name)
    if found == wanted:
        return
    if found is not None:
        op.drop_index(name, table_name=table)
    op.create_index(name, table, wanted, unique=unique)
    _plan_index(table, name, wanted)


def retype(table: str, wanted: dict[str, Any]) -> None:
    """MySQL/MariaDB: give columns an earlier release typed otherwise the declared type (a table made inside a
    Dagster run got DATETIME(6) and DOUBLE, one made by `migrate` DATETIME and FLOAT: see db/tables.py). Elsewhere
    those types already agree. Compared as compiled, so the declared types must be MySQL's own (not generic)."""
    if dialect() != "mysql":
        return
    conn = _attributes()["connection"]
    have = columns(table)
    for name, kind in wanted.items():
        found = have.get(name)
        if found and found["type"].compile(dialect=conn.dialect) != kind.compile(dialect=conn.dialect):
            op.alter_column(table, name, type_=kind, existing_type=found["type"], existing_nullable=found["nullable"])


def drop_columns(table: str, names: list[str]) -> None:
    present = [name for name in names if name in columns(table)]
    if present:
        with op.batch_alter_table(table, copy_from=_reflected(table)) as batch:
            for name in present:
                batch.drop_column(name)


def drop_index(table: str, name: str) -> None:
    if indexes(table).get(name) is not None:
        op.drop_index(name, table_name=table)
        _plan_index(table, name, None)


def drop_table(name: str) -> None:
    if has_table(name):
        op.drop_table(name)
        _planned().pop(name, None)


def _reflected(name: str) -> sa.Table | None:
    """The table as it is, for SQLite's batch copy (so `--sql` can print it without a live copy)."""
    if dialect() != "sqlite":
        return None
    return sa.Table(name, sa.MetaData(), autoload_with=_attributes()["connection"])
