"""Pay once per image, whatever happens: kill -9, Ctrl-C and SIGTERM, two runs at once, an unreachable API, a
throttled account, a bad token. Each through real `dagster asset materialize` processes against the emulator,
counting creates per image at the API."""

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import BIN, DAYS, PROJECT, TODAY, assert_every_good_image_stored, chain_command, run, workdir

from replicate_assets.db import engine_for
from replicate_assets.testing.emulator import Emulator, Faults
from replicate_assets.testing.sample_shop import build_sample_shop

MATERIALIZE = chain_command(DAYS[0], DAYS[-1])


def start(env: dict, log: Path) -> subprocess.Popen:
    """`dagster asset materialize` over the three days, in its own process group, output to `log`."""
    out = log.open("w")
    return subprocess.Popen(
        [str(BIN / "dagster"), *MATERIALIZE[1:]],
        env=env,
        cwd=workdir(env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def failure_of(log: str) -> str:
    """A failed run's error lines (the exception of each failed step), not only its last lines."""
    lines = log.splitlines()
    marks = [i for i, line in enumerate(lines) if "Error" in line or "error" in line.split(" - ")[-1]]
    return "\n".join(lines[i] for i in marks[:40]) or log[-2000:]


def wait_for_creates(emulator: Emulator, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(emulator.creates()) < count and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before the moment the test wanted"


def paid(emulator: Emulator) -> Counter:
    """Accepted creates per input (image URL): what Replicate billed."""
    return Counter(emulator.creates_per_input())


def good_urls(url: str, shop, image_server) -> dict[str, bytes]:
    """Image URL -> bytes for every image that can be embedded."""
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT id, path FROM product_images")).all()
    found = {}
    for row in rows:
        if row.id not in shop.broken:
            full = row.path if row.path.startswith("http") else f"{image_server.base_url}/{row.path}"
            found[full] = image_server.images[full.removeprefix(image_server.base_url + "/")]
    return found


# -- kill -9: the next run takes over what was created, frees the pool slot, never hangs -----------------------------


def test_kill_9_then_rerun_pays_each_image_once_and_frees_the_pool(
    env, sqlite_url, image_server, fresh_emulator, tmp_path
):
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=60, days=3, today=TODAY)
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text(
        (PROJECT / "deploy" / "dagster.yaml").read_text()
    )  # pool limit 1
    fresh_emulator.latency = 0.4  # predictions in flight at the kill
    env = {**env, "REPLICATE_CHUNK_SIZE": "10", "REPLICATE_MAX_IN_FLIGHT": "6"}
    process = start(env, tmp_path / "first.log")
    wait_for_creates(fresh_emulator, 30, process)
    os.killpg(process.pid, signal.SIGKILL)  # the CLI and the run, steps included (one process per run)
    process.wait(timeout=10)
    time.sleep(0.6)  # predictions in flight finish at the emulator
    first = paid(fresh_emulator)

    rerun = run(MATERIALIZE, env, timeout=150)  # hung before: the dead run held the replicate_api slot
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert "freed the replicate_api pool slot of run" in output and "is gone" in output
    assert "took over" in output
    counts = paid(fresh_emulator)
    good = good_urls(sqlite_url, shop, image_server)
    assert {url: counts[url] for url in good} == dict.fromkeys(good, 1), "an image was paid for twice"
    assert sum(first.values()) >= 30  # the kill came mid-run, with images paid for
    assert_every_good_image_stored(sqlite_url, shop, image_server)


# -- Ctrl-C and SIGTERM: stop spending at once, store what was paid for, fail without a retry -----------------------


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_stops_new_creates_and_the_next_run_pays_nothing_twice(
    env, sqlite_url, image_server, fresh_emulator, tmp_path, sent
):
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=60, days=3, today=TODAY)
    fresh_emulator.latency = 0.3
    env = {**env, "REPLICATE_MAX_IN_FLIGHT": "4", "REPLICATE_RETRY_DELAY_SECONDS": "1"}
    log = tmp_path / "interrupted.log"
    process = start(env, log)
    wait_for_creates(fresh_emulator, 20, process)
    process.send_signal(sent)
    signalled = time.time()
    assert process.wait(timeout=60) != 0  # canceled or failed: a script sees it
    output = log.read_text()
    late = [r for r in fresh_emulator.creates() if r["at"] > signalled + 0.3]
    assert late == [], f"{len(late)} creates sent after the signal"
    assert "interrupted: nothing more was sent to Replicate" in output
    assert "STEP_UP_FOR_RETRY" not in output and "STEP_RESTARTED" not in output
    with engine_for(sqlite_url).connect() as conn:
        indexed = conn.execute(sa.text("SELECT COUNT(*) FROM clip_embedding_outcomes WHERE status = 'indexed'"))
        assert indexed.scalar_one() >= 15  # what was paid for before the signal is stored

    rerun = run(MATERIALIZE, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counts = paid(fresh_emulator)
    good = good_urls(sqlite_url, shop, image_server)
    assert {url: counts[url] for url in good} == dict.fromkeys(good, 1)
    assert_every_good_image_stored(sqlite_url, shop, image_server)


# -- two runs at once, without the run queue: the database is the arbiter --------------------------------------------


def test_two_runs_at_once_pay_each_image_once(env, shop_url, image_server, fresh_emulator, tmp_path):
    shop = build_sample_shop(engine_for(shop_url), image_server, products=60, days=3, today=TODAY)
    fresh_emulator.latency = 0.2
    env = {k: v for k, v in env.items() if k != "DAGSTER_HOME"}  # two throwaway instances: no shared pool
    env = {**env, "DATABASE_URL": shop_url, "REPLICATE_CHUNK_SIZE": "10", "REPLICATE_MAX_IN_FLIGHT": "4"}
    runs = [start(env, tmp_path / f"run{n}.log") for n in (1, 2)]
    codes = [process.wait(timeout=180) for process in runs]
    assert codes == [0, 0], [failure_of((tmp_path / f"run{n}.log").read_text()) for n in (1, 2)]
    counts = paid(fresh_emulator)
    assert counts and set(counts.values()) == {1}, {url: n for url, n in counts.items() if n > 1}
    logs = [(tmp_path / f"run{n}.log").read_text() for n in (1, 2)]
    assert all("Indexed ProductImage" in log for log in logs)  # they ran side by side and shared the work
    assert_every_good_image_stored(shop_url, shop, image_server)


# -- Replicate unreachable or not Replicate: images stay pending, the run fails and says where ----------------------


def test_an_api_that_is_not_replicate_leaves_every_image_pending(env, sqlite_url, image_server, fresh_emulator):
    build_sample_shop(engine_for(sqlite_url), image_server, products=10, days=3, today=TODAY)
    fresh_emulator.set_faults(Faults(not_replicate=True))  # a proxy's sign-in page, 200, text/html
    result = run(MATERIALIZE, {**env, "REPLICATE_RETRY_DELAY_SECONDS": "1"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"at {fresh_emulator.base_url} answered 200 with text/html, not Replicate's JSON" in output
    assert "STEP_UP_FOR_RETRY" in output  # the step retry waits for the API to come back
    with engine_for(sqlite_url).connect() as conn:
        states = conn.execute(sa.text("SELECT status, attempts FROM clip_embedding_outcomes")).all()
    assert states and all(s == "failed" or (s, a) == ("pending", 0) for s, a in states)
    assert not any(s == "failed" and a for s, a in states)  # no image failed because of the API


# -- a throttled account: learn its limit instead of collecting 429s ------------------------------------------------


def test_a_low_credit_account_is_paced_not_refused(env, sqlite_url, image_server, tmp_path):
    # 60 creates a minute with bursts of one: a low-credit account (6 a minute) ten times faster.
    with Emulator(token=env["REPLICATE_API_TOKEN"], creates_per_minute=60, burst=1) as throttled:
        build_sample_shop(engine_for(sqlite_url), image_server, products=8, days=3, today=TODAY)
        env = {**env, "REPLICATE_BASE_URL": throttled.base_url, "REPLICATE_MAX_PREDICTIONS_PER_MINUTE": "600"}
        result = run(MATERIALIZE, env, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
        answers = Counter(r["status"] for r in throttled.creates())
    assert answers[201] >= 10
    assert answers[429] <= answers[201] / 4, answers


# -- a bad token or an empty account: one refused request, not one per thread -----------------------------------------


@pytest.mark.parametrize(
    "faults, status, message",
    [
        (Faults(unauthorized=True), 401, "set REPLICATE_API_TOKEN to a valid token"),
        (Faults(no_credit=True), 402, "add credit at replicate.com/account/billing"),
    ],
    ids=["bad-token", "no-credit"],
)
def test_a_refused_account_costs_one_request(env, sqlite_url, image_server, fresh_emulator, faults, status, message):
    build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=TODAY)
    fresh_emulator.set_faults(faults)
    result = run(MATERIALIZE, env)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    refused = [r for r in fresh_emulator.requests if r["status"] == status]
    assert len(refused) == 1, f"{len(refused)} requests answered {status}"
    assert "STEP_UP_FOR_RETRY" not in result.stdout + result.stderr
