"""`replicate-assets` and `dagster asset materialize` as a user types them, in real subprocesses."""

import signal
import subprocess
import time

import dagster as dg
import pytest
import requests
import sqlalchemy as sa
from conftest import BIN, DAYS, PROJECT, TODAY, TOKEN, ignore_ctrl_c, make_resources, materialize_chain, run, stop

from replicate_assets.chain import SELECTION
from replicate_assets.db import engine_for
from replicate_assets.testing.emulator import Faults
from replicate_assets.testing.sample_shop import build_sample_shop

MATERIALIZE_DAY = ["asset", "materialize", "-m", "replicate_assets", "--select", SELECTION, "--partition", DAYS[0]]


@pytest.fixture
def sample(sqlite_url, image_server):
    return build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=TODAY)


def test_test_connection_prints_account_and_model(env):
    result = run(["replicate-assets", "test-connection"], env)
    assert result.returncode == 0, result.stderr
    assert "token accepted for user 'emulator'" in result.stdout
    assert "model openai/clip found" in result.stdout


@pytest.mark.parametrize(
    "change, message",
    [
        ({"REPLICATE_API_TOKEN": "r8_wrong_secret"}, "Replicate rejected the API token (401"),
        ({"REPLICATE_API_TOKEN": ""}, "REPLICATE_API_TOKEN is not set"),
        ({"REPLICATE_MODEL": "someone/else"}, "REPLICATE_MODEL='someone/else' is not a supported CLIP model"),
        ({"REPLICATE_BASE_URL": "not-a-url"}, "REPLICATE_BASE_URL='not-a-url' is not an http(s) URL"),
    ],
)
def test_test_connection_says_what_to_fix(env, change, message):
    result = run(["replicate-assets", "test-connection"], {**env, **change})
    assert result.returncode == 1
    assert message in result.stderr
    assert "r8_wrong_secret" not in result.stdout + result.stderr


def test_migrate_then_status_after_a_run(env, sample, sqlite_url, image_server, fresh_emulator, tmp_path):
    first = run(["replicate-assets", "migrate"], env)
    assert first.returncode == 0 and "created: clip_embedding_outcomes, product_embeddings" in first.stdout
    again = run(["replicate-assets", "migrate"], env)
    assert again.returncode == 0 and "nothing to do" in again.stdout

    materialize_chain(make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1])
    status = run(["replicate-assets", "status"], env)
    assert status.returncode == 0, status.stderr
    good = sample.images - len(sample.broken)
    assert f"embeddings stored:                  {good}" in status.stdout
    assert f"images indexed / pending / failed:  {good} / 0 / {len(sample.broken)}" in status.stdout
    for image_id in sample.broken:
        assert f"ProductImage #{image_id} of Product" in status.stdout
    assert "s3cr3t" not in status.stdout


def test_emulator_command_serves_the_api(tmp_path):
    command = [str(BIN / "replicate-assets"), "emulator", "--port", "0", "--token", TOKEN, "--retention", "0.5"]
    # started as a shell's background job is (SIGINT ignored): Ctrl-C still stops it
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=ignore_ctrl_c)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        line = process.stdout.readline()
        base_url = line.split("listening at ")[1].split()[0]
        account = requests.get(f"{base_url}/account", headers=auth, timeout=5)
        assert account.json()["username"] == "emulator"
        prediction = requests.post(
            f"{base_url}/models/openai/clip/predictions",
            json={"input": {"text": "a red shoe"}},
            headers={**auth, "Prefer": "wait"},
            timeout=10,
        ).json()
        assert prediction["status"] == "succeeded" and len(prediction["output"]["embedding"]) == 768
        time.sleep(0.6)
        removed = requests.get(prediction["urls"]["get"], headers=auth, timeout=5).json()
        assert removed["data_removed"] is True and removed["output"] is None
    finally:
        stop(process, signal.SIGINT)
    assert process.returncode == 0


def embedded_images(url: str) -> set[int]:
    with engine_for(url).connect() as conn:
        return {row[0] for row in conn.execute(sa.text("SELECT product_image_id FROM product_embeddings"))}


def images_on(url: str, days: list[str]) -> set[int]:
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT id, created_at FROM product_images")).all()
    return {row.id for row in rows if str(row.created_at)[:10] in days}


def test_dagster_asset_materialize_as_a_user_types_it(env, sample, sqlite_url):
    materialize = ["dagster", "asset", "materialize", "-m", "replicate_assets"]
    # 1. clip_embeddings before product_images: a clear message with the command to run.
    alone = run([*materialize, "--select", "clip_embeddings", "--partition", DAYS[0]], env)
    assert alone.returncode != 0
    output = alone.stdout + alone.stderr
    assert "product_images has not been materialized" in output
    assert f"--select product_images,clip_embeddings,embedding_table --partition {DAYS[0]}" in output

    # 2. The chain for one day.
    day = run([*materialize, "--select", SELECTION, "--partition", DAYS[0]], env)
    assert day.returncode == 0, day.stdout[-3000:] + day.stderr[-3000:]
    assert embedded_images(sqlite_url) == images_on(sqlite_url, DAYS[:1]) - set(sample.broken)

    # 3. clip_embeddings alone, now that product_images exists for the day.
    again = run([*materialize, "--select", "clip_embeddings", "--partition", DAYS[0]], env)
    assert again.returncode == 0, again.stderr[-3000:]

    # 4. A range: one run covers both remaining days.
    ranged = run([*materialize, "--select", SELECTION, "--partition-range", f"{DAYS[1]}...{DAYS[2]}"], env)
    assert ranged.returncode == 0, ranged.stderr[-3000:]
    assert embedded_images(sqlite_url) == images_on(sqlite_url, DAYS) - set(sample.broken)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert len(runs) == 4
        assert runs[0].tags["dagster/asset_partition_range_start"] == DAYS[1]
        partitions = instance.get_materialized_partitions(dg.AssetKey("embedding_table"))
        assert partitions == set(DAYS)
        # The steps ran in the run's own process: a process per step only adds start-up time to a sequential chain.
        events = [e.dagster_event.event_type_value for e in instance.all_logs(runs[0].run_id) if e.dagster_event]
        assert events.count("STEP_SUCCESS") == 6, events  # three assets and three checks
        assert "STEP_WORKER_STARTING" not in events
    assert TOKEN not in (PROJECT / "workspace.yaml").read_text()


def test_failed_lists_reasons_and_retry_failed_reruns_their_days(
    env, sample, sqlite_url, image_server, fresh_emulator, tmp_path
):
    materialize_chain(make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1])
    listed = run(["replicate-assets", "failed"], env)
    assert listed.returncode == 0
    for image_id, why in sample.broken.items():
        line = next(line for line in listed.stdout.splitlines() if line.startswith(f"ProductImage #{image_id} "))
        assert ("1 attempt, will retry" if "404" in why else "never sent (fix the row") in line
    assert "s3cr3t" not in listed.stdout

    # The dead URL comes back: retry-failed --run embeds it through a real Dagster run.
    dead = next(i for i, why in sample.broken.items() if why == "dead URL (404)")
    image_server.images["products/5/missing.png"] = b"now it exists"
    listed_only = run(["replicate-assets", "retry-failed"], env)  # as a user would: look first, then run
    assert listed_only.returncode == 0 and "run those commands, pass --run" in listed_only.stdout
    retried = run(["replicate-assets", "retry-failed", "--run"], env)
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert "1 day(s) hold failed or pending images" in retried.stdout  # the images the first call made pending
    assert "dagster asset materialize" in retried.stdout
    assert dead in embedded_images(sqlite_url)
    del image_server.images["products/5/missing.png"]


# -- one clear line, never a traceback --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, line",
    [
        (
            "REPLICATE_CHUNK_SIZE",
            "abc",
            "error: REPLICATE_CHUNK_SIZE='abc' must be a positive whole number from 1 to 10000 (default 50)",
        ),
        (
            "PRODUCT_IMAGES_START_DATE",
            "15/01/2025",
            "error: PRODUCT_IMAGES_START_DATE='15/01/2025' is not a date: use YYYY-MM-DD, e.g. 2024-01-01",
        ),
        (
            "IMAGE_BASE_URL",
            "ftp://files.example/storage",
            "error: IMAGE_BASE_URL='ftp://files.example/storage' is not an http(s) URL: set it to e.g. "
            "https://host/path",
        ),
        (
            "DATABASE_URL",
            "oracle://scott:tiger@db/shop",
            "error: DATABASE_URL uses oracle://, which is not supported: use e.g. mysql+pymysql://user:pass@host/shop, "
            "postgresql+psycopg2://user@host/shop or sqlite:///shop.db",
        ),
        (
            "REPLICATE_BASE_URL",
            "http://localhost:eighty/v1",
            "error: REPLICATE_BASE_URL='http://localhost:eighty/v1' has a port that is not a number",
        ),
        (
            "DATABASE_URL",
            "shop:secret@db/shop",
            "error: DATABASE_URL is not a SQLAlchemy URL (19 characters, no scheme): use e.g. "
            "mysql+pymysql://user:pass@host/shop, postgresql+psycopg2://user@host/shop or sqlite:///shop.db",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(env, name, value, line):
    for command in (["replicate-assets", "status"], ["dagster", *MATERIALIZE_DAY]):
        result = run(command, {**env, name: value})
        assert result.returncode != 0
        assert line in result.stderr.splitlines(), result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "tiger" not in result.stderr and "secret" not in result.stderr


def test_the_package_imports_whatever_the_environment(env):
    result = subprocess.run(
        [str(BIN / "python"), "-c", "import replicate_assets"],
        env={**env, "REPLICATE_CHUNK_SIZE": "abc"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_test_connection_says_what_is_wrong_in_one_line(env, fresh_emulator):
    fresh_emulator.set_faults(Faults(not_replicate=True))
    html = run(["replicate-assets", "test-connection"], env)
    assert html.returncode == 1 and "Traceback" not in html.stderr
    assert "answered 200 with text/html, not Replicate's JSON" in html.stderr
    fresh_emulator.set_faults(None)
    unknown = run(
        ["replicate-assets", "test-connection"], {**env, "REPLICATE_MODEL": "krthr/clip-embeddings:" + "0" * 64}
    )
    assert unknown.returncode == 1 and "answered 404" in unknown.stderr and "REPLICATE_MODEL" in unknown.stderr


def test_limits_and_ports_are_checked(env, fresh_emulator):
    negative = run(["replicate-assets", "failed", "--limit", "-5"], env)
    assert negative.returncode == 2 and "'-5' is not a positive whole number" in negative.stderr
    assert "Traceback" not in negative.stderr
    port = fresh_emulator.server.server_address[1]  # taken
    taken = run(["replicate-assets", "emulator", "--port", str(port)], env)
    assert taken.returncode == 1 and f"the emulator cannot listen on port {port}" in taken.stderr
    assert "Traceback" not in taken.stderr


def test_read_only_commands_write_nothing(env, tmp_path, sample, sqlite_url):
    mistyped = tmp_path / "no" / "such" / "shop.db"
    result = run(["replicate-assets", "status"], {**env, "DATABASE_URL": f"sqlite:///{mistyped}"})
    assert result.returncode == 1 and f"the shop database {mistyped} does not exist" in result.stderr
    assert not (tmp_path / "no").exists()
    status = run(["replicate-assets", "status"], env)  # a shop before any run: our tables are not made
    assert status.returncode == 0 and "our tables do not exist" in status.stdout
    migrate = run(["replicate-assets", "migrate"], env)
    assert "created: clip_embedding_outcomes, product_embeddings" in migrate.stdout
    with engine_for(sqlite_url).begin() as conn:  # an image with no created_at: counted, not a traceback
        conn.execute(sa.text("UPDATE product_images SET created_at = NULL WHERE id = 1"))
    again = run(["replicate-assets", "status"], env)
    assert again.returncode == 0 and "images without created_at: 1" in again.stdout
