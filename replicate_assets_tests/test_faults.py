"""What happens when Replicate misbehaves: every row of the README's table, through real HTTP and real runs.

Each test injects faults into the emulator, runs the chain, and asserts what ends up in product_embeddings, in
clip_embedding_outcomes and in the emulator's request log.
"""

import json
import re
import socket

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import DAYS, TODAY, make_resources, materialize_chain

from replicate_assets.db import engine_for
from replicate_assets.testing.emulator import Faults, embedding_for
from replicate_assets.testing.sample_shop import build_sample_shop


@pytest.fixture
def shop(sqlite_url, image_server):
    return build_sample_shop(engine_for(sqlite_url), image_server, products=20, days=3, today=TODAY)


def run_chain(sqlite_url, image_server, emulator, tmp_path, raise_on_error=False, **client):
    resources = make_resources(sqlite_url, image_server, emulator, tmp_path, **client)
    return materialize_chain(resources, first=DAYS[0], last=DAYS[-1], raise_on_error=raise_on_error)


def outcomes(url):
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT product_image_id, status, error, attempts FROM clip_embedding_outcomes"))
        return {row.product_image_id: row for row in rows}


def stored(url):
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT product_image_id, embedding FROM product_embeddings")).all()
    return {r.product_image_id: r.embedding if isinstance(r.embedding, list) else json.loads(r.embedding) for r in rows}


def good_images(url, shop, image_server):
    """image id -> expected embedding, for every image that can be embedded."""
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT id, path FROM product_images")).all()
    expected = {}
    for row in rows:
        if row.id in shop.broken:
            continue
        key = row.path.removeprefix(image_server.base_url + "/")
        expected[row.id] = embedding_for(image_server.images[key])
    return expected


def step_starts(result, step):
    return sum(1 for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START and e.step_key == step)


def retries(result, step):
    kind = dg.DagsterEventType.STEP_UP_FOR_RETRY
    return sum(1 for e in result.all_events if e.event_type == kind and e.step_key == step)


def creates_ok(emulator):
    return [r for r in emulator.creates() if r["status"] == 201]


# -- 401, 402, 404, 422 invalid version: stop at once, no retry, keep what is done -------------------------------


@pytest.mark.parametrize(
    "faults, client, message",
    [
        (Faults(unauthorized=True, start_after=6), {}, "set REPLICATE_API_TOKEN to a valid token"),
        (Faults(no_credit=True, start_after=6), {}, "add credit at replicate.com/account/billing"),
    ],
)
def test_account_errors_stop_the_run_and_keep_what_is_done(
    sqlite_url, shop, image_server, fresh_emulator, tmp_path, faults, client, message
):
    fresh_emulator.set_faults(faults)
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path, max_in_flight=1, **client)
    assert not result.success
    failure = result.failure_data_for_node("clip_embeddings").user_failure_data.description
    assert message in failure
    assert retries(result, "clip_embeddings") == 0
    done = {i for i, row in outcomes(sqlite_url).items() if row.status != "pending"}
    assert len(done) == 6 == len(creates_ok(fresh_emulator))  # the six paid for before the error are stored


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": "krthr/clip-embeddings:" + "0" * 64}, "does not accept the model version"),
        ({"base_url_suffix": "/v2"}, "answered 404"),
    ],
)
def test_wrong_model_stops_the_run_with_what_to_fix(
    sqlite_url, shop, image_server, fresh_emulator, tmp_path, change, message
):
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    client = resources["replicate"]
    resources["replicate"] = type(client)(
        api_token=client.api_token,
        base_url=client.base_url + change.get("base_url_suffix", ""),
        model=change.get("model", client.model),
    )
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1], raise_on_error=False)
    failure = result.failure_data_for_node("clip_embeddings").user_failure_data.description
    assert message in failure and "REPLICATE_MODEL" in failure
    assert retries(result, "clip_embeddings") == 0
    assert stored(sqlite_url) == {}


# -- 422 input validation: that image fails, the others go on -------------------------------------------------------


def test_rejected_input_fails_only_that_image(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    fresh_emulator.set_faults(Faults(invalid_input="products/2/"))
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert result.success
    rows = outcomes(sqlite_url)
    rejected = {i for i, row in rows.items() if row.error and "Could not identify image file" in row.error}
    assert rejected and all(rows[i].status == "failed" for i in rejected)
    assert set(stored(sqlite_url)) == set(good_images(sqlite_url, shop, image_server)) - rejected


# -- 429: wait, then go on; not an image failure --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["body", "header", "none"])
def test_throttling_is_waited_out(sqlite_url, shop, image_server, fresh_emulator, tmp_path, where):
    # The sixth create starts a one-second burst of 429s: every create in that second is throttled.
    fresh_emulator.set_faults(Faults(throttle=1.0, retry_after=1, retry_after_in=where, start_after=5, stop_after=6))
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert result.success
    metadata = result.asset_materializations_for_node("clip_embeddings")[0].metadata
    assert metadata["throttled_429"].value > 0
    assert stored(sqlite_url) == good_images(sqlite_url, shop, image_server)
    # No image failed for the throttling (the image server's port may itself hold the digits 429).
    throttled = re.compile(r"\b429\b|throttl|rate limit", re.IGNORECASE)
    assert not [row.error for row in outcomes(sqlite_url).values() if throttled.search(row.error or "")]


# -- 5xx (JSON or HTML), resets, read timeouts: retried with backoff -----------------------------------------------


def test_transient_faults_are_retried(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    fresh_emulator.set_faults(
        Faults(server_error=0.2, html_error=0.15, reset=0.1, poll_errors=True, slow=0.2, slow_seconds=1.2)
    )
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path, sync_wait_seconds=1)
    assert result.success
    metadata = result.asset_materializations_for_node("clip_embeddings")[0].metadata
    # Counted in the metadata of the attempt that met them; on a loaded machine a step may have been retried
    # whole (its last attempt then met none), which the event log says.
    retried = any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert metadata["transient_errors"].value > 0 or retried
    assert stored(sqlite_url) == good_images(sqlite_url, shop, image_server)
    statuses = {r["status"] for r in fresh_emulator.creates()}
    assert {500, 502, -1} <= statuses  # all three kinds were met


def test_a_create_that_timed_out_is_found_in_the_list_not_paid_twice(
    sqlite_url, shop, image_server, fresh_emulator, tmp_path
):
    # Three creates start their prediction but answer too late: the client times out, lists the account's
    # predictions, and takes the one it started instead of creating it again.
    fresh_emulator.set_faults(Faults(hang=1.0, hang_seconds=2.5, stop_after=3))
    result = run_chain(
        sqlite_url, image_server, fresh_emulator, tmp_path, sync_wait_seconds=1, read_timeout_seconds=0.5
    )
    assert result.success
    metadata = result.asset_materializations_for_node("clip_embeddings")[0].metadata
    assert metadata["predictions_found_after_timeouts"].value == 3
    assert metadata["possible_duplicate_creates"].value == 0
    assert set(fresh_emulator.creates_per_input().values()) == {1}
    assert stored(sqlite_url) == good_images(sqlite_url, shop, image_server)


def test_outage_past_the_in_step_retries_fails_the_step_and_the_retry_sends_only_the_rest(
    sqlite_url, shop, image_server, fresh_emulator, tmp_path
):
    # Creates 10 to 18 all answer 500: four in a row mean Replicate is down, so the step stops with the images
    # pending (no attempt counted) and the RetryPolicy runs it again; the second outage does the same.
    fresh_emulator.set_faults(Faults(server_error=1.0, start_after=10, stop_after=18))
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path, max_in_flight=1)
    assert result.success
    assert retries(result, "clip_embeddings") == 2  # failed twice, retried by the RetryPolicy
    assert stored(sqlite_url) == good_images(sqlite_url, shop, image_server)
    per_input = {}
    for request in creates_ok(fresh_emulator):
        for item in request["inputs"]:
            per_input[item] = per_input.get(item, 0) + 1
    assert set(per_input.values()) == {1}, {u: n for u, n in per_input.items() if n > 1}
    rows = outcomes(sqlite_url).values()
    assert all(row.attempts == 1 for row in rows if row.status == "indexed")  # an outage is no attempt


# -- failed, canceled, aborted, stuck, malformed, sparse ----------------------------------------------------------


def test_failed_prediction_fails_the_image_with_the_model_error(
    sqlite_url, shop, image_server, fresh_emulator, tmp_path
):
    fresh_emulator.set_faults(Faults(failed=1.0))
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert result.success
    rows = outcomes(sqlite_url)
    sent = [row for i, row in rows.items() if i in good_images(sqlite_url, shop, image_server)]
    assert sent and all(row.status == "failed" and "CUDA error" in row.error for row in sent)
    assert stored(sqlite_url) == {}


@pytest.mark.parametrize("status", ["canceled", "aborted"])
def test_canceled_or_aborted_is_tried_once_more(sqlite_url, shop, image_server, fresh_emulator, tmp_path, status):
    fresh_emulator.set_faults(Faults(**{status: 1.0}))
    run_chain(sqlite_url, image_server, fresh_emulator, tmp_path)
    good = good_images(sqlite_url, shop, image_server)
    rows = outcomes(sqlite_url)
    assert all(rows[i].status == "failed" and f"was {status}, twice" in rows[i].error for i in good)
    assert set(fresh_emulator.creates_per_input().values()) == {2}


def test_stuck_prediction_is_canceled_at_the_deadline(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    fresh_emulator.set_faults(Faults(stuck=1.0, stop_after=2))
    result = run_chain(
        sqlite_url, image_server, fresh_emulator, tmp_path, sync_wait_seconds=1, prediction_timeout_seconds=1.5
    )
    assert result.success
    stuck = [row for row in outcomes(sqlite_url).values() if row.error and "did not finish within 1.5 s" in row.error]
    assert len({row.error for row in stuck}) == 2  # two predictions (an image URL may serve several rows)
    assert all(row.status == "failed" for row in stuck)
    cancels = [r for r in fresh_emulator.requests if r["path"].endswith("/cancel")]
    assert len(cancels) == 2
    assert len(stored(sqlite_url)) == len(good_images(sqlite_url, shop, image_server)) - len(stuck)


def test_malformed_output_fails_the_image_and_stores_nothing(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    fresh_emulator.set_faults(Faults(malformed=1.0))
    run_chain(sqlite_url, image_server, fresh_emulator, tmp_path)
    good = good_images(sqlite_url, shop, image_server)
    rows = outcomes(sqlite_url)
    assert all(rows[i].status == "failed" and rows[i].error.startswith("malformed output") for i in good)
    assert stored(sqlite_url) == {}
    sent = fresh_emulator.creates_per_input()
    urls = {url for url in sent if "missing" not in url and "gone" not in url}
    assert {sent[url] for url in urls} == {2}  # tried once more, then failed


def test_loose_answers_are_parsed(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    fresh_emulator.set_faults(Faults(sparse=1.0, slow=0.5, slow_seconds=1.2))
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path, sync_wait_seconds=1)
    assert result.success
    assert stored(sqlite_url) == good_images(sqlite_url, shop, image_server)


# -- rate limiting, concurrency, batching ----------------------------------------------------------------------------


def test_requests_in_flight_are_bounded_and_sync_waits_short(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    fresh_emulator.latency = 0.2
    result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path, max_in_flight=3)
    assert result.success
    assert fresh_emulator.max_in_flight == 3
    assert {r["prefer"] for r in fresh_emulator.creates()} == {"wait=5"}


def test_the_create_limit_holds_across_threads(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    fresh_emulator.set_faults(None)
    result = run_chain(
        sqlite_url, image_server, fresh_emulator, tmp_path, max_in_flight=8, max_predictions_per_minute=600
    )
    assert result.success
    times = sorted(r["at"] for r in fresh_emulator.creates())
    # 10 a second with a one-second burst: the 11th create comes at least ~0.1 s after the first.
    rate = (len(times) - 10) / (times[-1] - times[0])
    assert rate <= 10.5, f"{rate:.1f} creates/s over the limit of 10/s"


def test_clip_features_batches_and_isolates_dead_urls(sqlite_url, shop, image_server, fresh_emulator, tmp_path):
    result = run_chain(
        sqlite_url, image_server, fresh_emulator, tmp_path, model="andreasjansson/clip-features", batch_size=10
    )
    assert result.success
    assert stored(sqlite_url) == good_images(sqlite_url, shop, image_server)
    rows = outcomes(sqlite_url)
    dead = [i for i, why in shop.broken.items() if "404" in why]
    assert dead and all(rows[i].status == "failed" and "HTTP 404" in rows[i].error for i in dead)
    urls = len({u for r in fresh_emulator.creates() for u in r["inputs"]})
    batches = -(-urls // 10)
    # The batch holding the dead URL fails once and is sent again without it: one extra prediction per dead URL.
    assert len(fresh_emulator.creates()) == batches + len(dead)
    metadata = result.asset_materializations_for_node("clip_embeddings")[0].metadata
    assert metadata["estimated_cost_usd"].value == pytest.approx(0.0152 * (batches + len(dead)) * 0.000225, rel=1e-2)


# -- all faults at once --------------------------------------------------------------------------------------------


def test_all_faults_at_once_end_with_every_good_image_embedded_exactly_once(
    sqlite_url, image_server, fresh_emulator, tmp_path
):
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=120, days=3, today=TODAY)
    with engine_for(sqlite_url).connect() as conn:
        paths = conn.execute(sa.text("SELECT id, path FROM product_images ORDER BY id")).all()
    for image_id, path in paths[20::100]:  # 1% more dead URLs: the files vanish from the image server
        if image_id not in shop.broken:
            image_server.images.pop(path.removeprefix(image_server.base_url + "/"))
            shop.broken[image_id] = "dead URL (404)"
    fresh_emulator.set_faults(
        Faults(server_error=0.05, html_error=0.05, throttle=0.01, slow=0.1, slow_seconds=1.2, malformed=0.02)
    )
    for _ in range(3):  # a run, then what the missing-embeddings sensor would start while failures are retryable
        result = run_chain(sqlite_url, image_server, fresh_emulator, tmp_path, sync_wait_seconds=1)
        assert result.success
        if all(row.status == "indexed" for i, row in outcomes(sqlite_url).items() if i not in shop.broken):
            break
    assert stored(sqlite_url) == good_images(sqlite_url, shop, image_server)
    with engine_for(sqlite_url).connect() as conn:
        per_image = conn.execute(
            sa.text("SELECT COUNT(*) FROM product_embeddings GROUP BY product_image_id HAVING COUNT(*) > 1")
        ).all()
    assert per_image == []
    rows = outcomes(sqlite_url)
    assert all(rows[i].status == "failed" and rows[i].error for i in shop.broken)


# -- Replicate unreachable: the images stay pending, the run fails and says where --------------------------------------


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # nothing listens once the socket is closed


@pytest.mark.parametrize(
    "base_url, reason",
    [
        (closed_port, "connection refused"),
        (lambda: "https://replicate.invalid/v1", "the host name does not resolve (DNS)"),
    ],
    ids=["closed-port", "dns"],
)
def test_an_unreachable_api_leaves_the_images_pending_and_retries_the_step(
    sqlite_url, shop, image_server, fresh_emulator, tmp_path, base_url, reason
):
    url = base_url()
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    resources["replicate"] = type(resources["replicate"])(api_token="r8_test", base_url=url, backoff_seconds=0.01)
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1], raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("clip_embeddings").user_failure_data.description
    assert f"Replicate at {url} failed 4 times in a row" in failure and reason in failure
    assert "the images stay pending" in failure
    assert retries(result, "clip_embeddings") == 3  # the RetryPolicy waited and tried again, three times
    rows = outcomes(sqlite_url).values()
    sendable = [row for row in rows if row.status != "failed"]
    assert sendable and all(row.status == "pending" and row.attempts == 0 for row in sendable)
