"""Nothing paid twice, nothing lost, nothing leaked: real `dagster asset materialize` processes, a real kill -9."""

import os
import signal
import subprocess
import time
import uuid

import sqlalchemy as sa
from conftest import (
    BIN,
    DAYS,
    TODAY,
    assert_every_good_image_stored,
    chain_command,
    files_holding,
    run,
    workdir,
)

from replicate_assets.db import engine_for
from replicate_assets.testing.emulator import Faults
from replicate_assets.testing.sample_shop import build_sample_shop

MATERIALIZE = chain_command(DAYS[0], DAYS[-1])


def indexed_urls(url: str) -> set[str]:
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT image_url FROM clip_embedding_outcomes WHERE status = 'indexed'"))
        return {row[0] for row in rows}


def created(emulator, since: int = 0) -> list[str]:
    return [u for r in emulator.creates()[since:] if r["status"] == 201 for u in r["inputs"]]


def test_kill_9_mid_run_then_rerun_embeds_each_image_once(env, sqlite_url, image_server, fresh_emulator):
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=120, days=3, today=TODAY)
    fresh_emulator.latency = 0.1
    env = {**env, "REPLICATE_CHUNK_SIZE": "10", "REPLICATE_MAX_IN_FLIGHT": "4"}
    process = subprocess.Popen(
        [str(BIN / MATERIALIZE[0]), *MATERIALIZE[1:]],
        env=env,
        cwd=workdir(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len(fresh_emulator.creates()) < 60 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the CLI and the run, steps included (one process per run)
    process.wait(timeout=10)
    time.sleep(0.5)  # answers already on their way land in the emulator's log
    first_run = created(fresh_emulator)
    durable = indexed_urls(sqlite_url)
    assert durable and len(durable) < len(set(first_run)) + 1

    mark = len(fresh_emulator.creates())
    rerun = run(MATERIALIZE, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    second_run = created(fresh_emulator, mark)

    assert not durable & set(second_run), "an image stored before the kill was paid for again"
    lost = set(first_run) & set(second_run)
    assert len(lost) <= 10 + 4, f"{len(lost)} images re-sent: more than the chunk in flight"
    assert_every_good_image_stored(sqlite_url, shop, image_server)


def test_the_token_never_reaches_logs_metadata_errors_or_disk(env, sqlite_url, image_server, fresh_emulator, tmp_path):
    secret = f"r8_{uuid.uuid4().hex}"  # made here, so no source file holds it
    fresh_emulator.token = secret
    try:
        build_sample_shop(engine_for(sqlite_url), image_server, products=20, days=3, today=TODAY)
        env = {**env, "REPLICATE_API_TOKEN": secret}
        outputs = [run(MATERIALIZE, env)]
        assert outputs[0].returncode == 0, outputs[0].stderr[-2000:]
        fresh_emulator.set_faults(Faults(unauthorized=True))  # a failing run: its error and its stack trace
        outputs.append(run(MATERIALIZE, env))
        assert outputs[1].returncode != 0
        fresh_emulator.set_faults(Faults(server_error=1.0))
        outputs.append(run(["replicate-assets", "test-connection"], env))
        outputs.append(run(["replicate-assets", "status"], env))
    finally:
        fresh_emulator.token = "r8_test_token_0123456789"
    leaks = [" ".join(o.args) for o in outputs if secret in o.stdout + o.stderr]
    written = files_holding([secret], tmp_path)
    assert not leaks and not written, (leaks, written)
    assert len(list(tmp_path.rglob("*.db"))) >= 2  # the shop and Dagster's own storage were searched
