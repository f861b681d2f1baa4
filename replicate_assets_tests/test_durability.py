"""Nothing paid twice, nothing lost, nothing leaked: real `dagster asset materialize` processes, a real kill -9."""

import uuid

import sqlalchemy as sa
from conftest import (
    DAYS,
    TODAY,
    chain_command,
    files_holding,
    run,
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
