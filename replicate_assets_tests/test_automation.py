"""The similarity assets catch up on their own: whenever a parent's data is newer than their last materialization,
on the first evaluation after the sensor starts, after a restart, after missed ticks and after a failed run; never
twice for the same data; never while a parent or they are running. Evaluated as the daemon's similarity_automation
sensor evaluates them (`dg.evaluate_automation_conditions`), in every order."""

import datetime as dt

import dagster as dg
import pytest
from conftest import DAYS, TODAY, definitions, make_resources, materialize_chain, similarity_run

from replicate_assets.db import engine_for
from replicate_assets.defs.resources import ShopDatabase
from replicate_assets.defs.similarity import automation
from replicate_assets.testing.sample_shop import build_sample_shop

SIMILAR, INDEX = dg.AssetKey("product_similarities"), dg.AssetKey("similarity_index")
GROUP = dg.AssetSelection.groups("similarity")


@pytest.fixture
def setting(sqlite_url, image_server, fresh_emulator, tmp_path):
    build_sample_shop(engine_for(sqlite_url), image_server, products=12, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    return resources, dg.DagsterInstance.ephemeral(), definitions()


def evaluate(defs, instance, cursor=None):
    return dg.evaluate_automation_conditions(defs, instance, asset_selection=GROUP, cursor=cursor)


def requested(result) -> tuple[int, int]:
    """Runs requested of the lists and of the index (the lag check's own hourly schedule aside)."""
    return result.get_num_requested(SIMILAR), result.get_num_requested(INDEX)


def test_embeddings_that_landed_before_the_sensor_started_are_caught_up(setting, tmp_path):
    resources, instance, defs = setting
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance).success
    first = evaluate(defs, instance)  # the sensor's very first tick, embeddings already there
    assert requested(first) == (1, 1)  # the lists, and the index after them in the same run
    lag = dg.AssetCheckKey(SIMILAR, "similarity_lag")
    assert [r.true_subset.size for r in first.results if r.key == lag] == [1]  # and the lag check with them
    again = evaluate(defs, instance, first.cursor)  # the next tick, before the requested run has started
    assert requested(again) == (0, 0)  # never twice for the same data
    assert similarity_run(resources, tmp_path, instance=instance).success
    assert requested(evaluate(defs, instance, again.cursor)) == (0, 0)


def test_nothing_is_requested_before_embeddings_land_then_once_when_they_do(setting, tmp_path):
    resources, instance, defs = setting
    before = evaluate(defs, instance)
    assert requested(before) == (0, 0)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance).success
    landed = evaluate(defs, instance, before.cursor)
    assert requested(landed) == (1, 1)
    assert similarity_run(resources, tmp_path, instance=instance).success
    quiet = evaluate(defs, instance, landed.cursor)
    assert requested(quiet) == (0, 0)
    assert materialize_chain(resources, partition=DAYS[-1], instance=instance).success  # a day embedded again
    assert requested(evaluate(defs, instance, quiet.cursor)) == (1, 1)


def test_a_restart_or_missed_ticks_lose_nothing(setting, tmp_path):
    """Embeddings land while the daemon is down (its cursor is lost with it, or kept): the next tick catches up."""
    resources, instance, defs = setting
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance).success
    assert similarity_run(resources, tmp_path, instance=instance).success
    kept = evaluate(defs, instance)
    assert requested(kept) == (0, 0)  # lists newer than the embeddings: nothing to do
    assert materialize_chain(resources, partition=DAYS[0], instance=instance).success  # while the daemon is down
    assert materialize_chain(resources, partition=DAYS[1], instance=instance).success  # ticks missed
    assert requested(evaluate(defs, instance, kept.cursor)) == (1, 1)  # the cursor kept across the restart
    assert requested(evaluate(defs, instance)) == (1, 1)  # or a new sensor state


def test_a_failed_run_is_tried_again_after_a_pause_not_on_every_tick(setting, tmp_path, monkeypatch):
    resources, instance, defs = setting
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance).success
    elsewhere = {**resources, "shop": ShopDatabase(url=f"sqlite:///{tmp_path / 'moved' / 'shop.db'}")}
    failed = similarity_run(elsewhere, tmp_path, instance=instance)  # the shop database has moved: it fails
    assert not failed.success
    assert requested(evaluate(defs, instance)) == (0, 0)  # it just failed: not again on the next tick
    monkeypatch.setattr(automation, "RETRY_SECONDS", 0.0)  # the pause has passed
    assert requested(evaluate(defs, instance)) == (1, 1)


def test_nothing_starts_while_a_parent_runs(setting):
    resources, instance, defs = setting
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance).success
    instance.create_run_for_job(  # a run of embedding_table, created and not yet finished
        job_def=defs.resolve_implicit_global_asset_job_def(),
        asset_selection={dg.AssetKey("embedding_table")},
        tags={"dagster/partition": DAYS[0]},
    )
    assert requested(evaluate(defs, instance)) == (0, 0)


def test_the_lag_check_is_run_every_hour_by_the_automation_sensor(setting):
    _, instance, defs = setting
    lag = dg.AssetCheckKey(SIMILAR, "similarity_lag")
    start = dg.evaluate_automation_conditions(
        defs, instance, asset_selection=GROUP, evaluation_time=dt.datetime(2026, 12, 1, 10, 1, tzinfo=dt.UTC)
    )
    later = dg.evaluate_automation_conditions(
        defs,
        instance,
        asset_selection=GROUP,
        cursor=start.cursor,
        evaluation_time=dt.datetime(2026, 12, 1, 11, 1, tzinfo=dt.UTC),
    )
    assert [r.true_subset.size for r in start.results if r.key == lag] == [0]
    assert [r.true_subset.size for r in later.results if r.key == lag] == [1]  # an hourly tick passed
