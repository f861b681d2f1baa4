"""When the similarity assets run on their own: whenever a parent holds data newer than their last materialization.

Dagster's `eager()` never fires here (it waits until no parent partition is missing, and `embedding_table` has days
without images), and `any_deps_updated()` only sees parents updated *between* two evaluations: embeddings that
landed before the automation sensor was started, while the daemon was down, or before a failed run would leave
the lists stale for good. This condition compares storage ids in the instance instead, so it holds on the first
evaluation after any of those, and stops holding once a run has materialized the asset after that data:

- a parent's latest materialization is newer than the asset's own latest materialization, and
- no run planned after that parent data is still in progress or succeeded (never twice for the same data); a
  run that failed is tried again `RETRY_SECONDS` after it ended (not on every tick of a lasting failure).

It is evaluated in the code location (`use_user_code_server=True` on the sensor), with `~in_progress()` and
`~any_deps_in_progress()` beside it so nothing starts while a parent or the asset is running, `~newly_requested()`
so the tick after a request never asks again, and `any_deps_match(will_be_requested())` so the index runs in the
same run as the lists it follows.
"""

from __future__ import annotations

import time

import dagster as dg

RETRY_SECONDS = 600.0  # a failed similarity run is tried again this long after it ended


def latest_materialization_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    """The storage id of the newest materialization of `key` (any partition), 0 when there is none."""
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else 0


def waiting_on_a_run(instance: dg.DagsterInstance, key: dg.AssetKey, newer_than: int) -> bool:
    """A run planned to materialize `key` after the parent data `newer_than` is queued, running, or failed less
    than RETRY_SECONDS ago."""
    planned = instance.get_latest_planned_materialization_info(key)
    if planned is None or planned.storage_id <= newer_than:
        return False
    record = instance.get_run_record_by_id(planned.run_id)
    if record is None:
        return False
    status = record.dagster_run.status
    if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return (record.end_time or 0) > time.time() - RETRY_SECONDS
    return status != dg.DagsterRunStatus.SUCCESS


class ParentDataNewer(dg.AutomationCondition):
    """A parent holds data newer than this asset's latest materialization, not yet requested (see module doc)."""

    @property
    def name(self) -> str:
        return "parent data newer than this asset"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        instance = context.asset_graph_view.instance
        key = context.key
        parents = context.asset_graph.get(key).parent_keys
        newest_parent = max((latest_materialization_id(instance, p) for p in parents), default=0)
        own = latest_materialization_id(instance, key)
        due = newest_parent > own and not waiting_on_a_run(instance, key, newest_parent)
        true_subset = context.candidate_subset if due else context.get_empty_subset()
        return dg.AutomationResult(context=context, true_subset=true_subset)


WHEN_PARENT_DATA_IS_NEWER = (
    (ParentDataNewer() | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()))
    & ~dg.AutomationCondition.newly_requested()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("when a parent's data is newer")
