"""Secrets never leave: the token, the database password and signed URLs' signatures reach no log, no file, no
event, no error and no UI; a URL shown anywhere has no credentials and no query string."""

import socket
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import (
    DAYS,
    TODAY,
    chain_command,
    drop_server_database,
    files_holding,
    make_resources,
    materialize_chain,
    run,
    server_database,
)
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from replicate_assets.db import engine_for
from replicate_assets.definitions import build_definitions
from replicate_assets.replicate import MODELS
from replicate_assets.settings import Settings
from replicate_assets.testing.emulator import Faults
from replicate_assets.testing.sample_shop import build_sample_shop, png

MATERIALIZE = chain_command(DAYS[0], DAYS[-1])


def test_the_database_password_is_an_env_var_in_the_ui(monkeypatch):
    url = "postgresql+psycopg2://shop:DBPASS123@db.internal:5432/shop"
    environ = {"DATABASE_URL": url, "REPLICATE_API_TOKEN": "r8_SNAPSHOT_TOKEN"}
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_SNAPSHOT_TOKEN")
    defs = build_definitions(Settings.from_env(environ), environ)
    snapshot = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert "DATABASE_URL" in snapshot and "REPLICATE_API_TOKEN" in snapshot  # shown by name ...
    assert "DBPASS123" not in snapshot and "r8_SNAPSHOT_TOKEN" not in snapshot  # ... never by value


def test_a_token_with_inner_whitespace_is_refused_without_showing_it(env):
    result = run(["replicate-assets", "test-connection"], {**env, "REPLICATE_API_TOKEN": "r8_SECRETPART other"})
    assert result.returncode == 1
    assert "REPLICATE_API_TOKEN holds spaces, line breaks or other characters" in result.stderr
    assert "SECRETPART" not in result.stdout + result.stderr and "Traceback" not in result.stderr


@pytest.mark.postgres
def sign_images(url: str, image_server, emulator, silent_port: int) -> list[str]:
    """Give images 1..9 signed URLs (S3, GCS, Azure SAS, userinfo) on every path the model's download can fail by
    (404, 403, refused, time-out, unknown host, TLS, too large), and one that works; returns the signatures."""
    signatures = [f"SIG{uuid.uuid4().hex[:10]}" for _ in range(9)]
    base, tls = image_server.base_url, image_server.base_url.replace("http://", "https://")
    image_server.images["signed/ok.png"] = png(777)
    image_server.images["signed/huge.png"] = png(778, size=400)
    image_server.statuses["signed/private.png"] = 403
    emulator.model.download_timeout = 1.0  # the silent host's time-out comes quickly
    emulator.model.max_image_bytes = len(image_server.images["signed/huge.png"]) - 1
    s3, gcs, azure = (
        "X-Amz-Credential=a/b&X-Amz-Signature=",
        "X-Goog-Signature=",
        "sv=2020&st=2025-01-01T00:00:00Z&sig=",
    )
    paths = [
        f"{base}/signed/ok.png?{s3}{signatures[0]}",  # works
        f"{base}/gone/a.png?{gcs}{signatures[1]}",  # 404
        f"{base}/signed/private.png?{s3}{signatures[2]}",  # 403
        f"http://127.0.0.1:9/gone/c.png?{azure}{signatures[3]}",  # refused
        f"http://127.0.0.1:{silent_port}/slow.png?{s3}{signatures[4]}",  # time-out
        f"http://no-such-host.invalid/d.png?{gcs}{signatures[5]}",  # unknown host
        f"{tls}/signed/ok.png?{azure}{signatures[6]}",  # TLS to a plain HTTP server
        f"{base}/signed/huge.png?{s3}{signatures[7]}",  # too large
        f"HTTP://user:{signatures[8]}@127.0.0.1:9/gone/e.png",  # userinfo, refused
    ]
    with engine_for(url).begin() as conn:
        for image_id, path in enumerate(paths, start=1):
            conn.execute(sa.text("UPDATE product_images SET path = :p WHERE id = :id"), {"p": path, "id": image_id})
    return signatures


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung image host)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_no_download_error_of_any_model_leaks_a_signature(
    model, sqlite_url, image_server, fresh_emulator, silent_port, tmp_path
):
    """Every way the model's download fails, on each model: the outcomes table, the run's event log and the
    progress log hold the failure without the URL's credentials."""
    build_sample_shop(engine_for(sqlite_url), image_server, products=12, days=3, today=TODAY)
    signatures = sign_images(sqlite_url, image_server, fresh_emulator, silent_port)
    resources = make_resources(
        sqlite_url, image_server, fresh_emulator, tmp_path, policy={"max_attempts": 1}, model=model
    )
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance, raise_on_error=False)
        events = str([record.event_log_entry for record in instance.get_records_for_run(result.run_id).records])
    with engine_for(sqlite_url).connect() as conn:
        errors = dict(conn.execute(sa.text("SELECT product_image_id, error FROM clip_embedding_outcomes")).all())
    assert all(errors.get(n) for n in range(2, 10)), errors  # each dead image failed, with a reason
    assert errors.get(1) is None  # the signed image that works was embedded
    leaks = [s for s in signatures if s in events + str(errors)]
    written = files_holding(signatures, tmp_path / "dagster_home", tmp_path / "logs")  # not the shop's own tables
    assert not leaks and not written, (leaks, written)
    assert "Failed ProductImage #4 - error:" in (tmp_path / "logs" / "replicate_embeddings.log").read_text()


def test_nothing_a_run_leaves_holds_a_secret(env, image_server, fresh_emulator, silent_port, tmp_path):
    token = f"r8_{uuid.uuid4().hex}"  # made here, so no source file holds it
    password = f"pw{uuid.uuid4().hex[:12]}"
    database = server_database("postgresql")
    parsed = sa.make_url(database)
    shop_url = parsed.set(password=password).render_as_string(hide_password=False)  # trust auth: any password
    fresh_emulator.token = token
    try:
        build_sample_shop(engine_for(database), image_server, products=20, days=3, today=TODAY)
        signatures = sign_images(database, image_server, fresh_emulator, silent_port)
        env = {**env, "DATABASE_URL": shop_url, "REPLICATE_API_TOKEN": token + "\n"}  # a secret mounted from a file
        outputs = [run(MATERIALIZE, env)]
        assert outputs[0].returncode == 0, outputs[0].stderr[-3000:]
        fresh_emulator.set_faults(Faults(unauthorized=True))  # a failing run: its error and its stack trace
        outputs.append(run(MATERIALIZE, env))
        assert outputs[1].returncode != 0
        fresh_emulator.set_faults(Faults(server_error=1.0))
        outputs += [run(["replicate-assets", command], env) for command in ("test-connection", "status", "failed")]
    finally:
        fresh_emulator.token = "r8_test_token_0123456789"
        drop_server_database(database)
    secrets = [token, password, *signatures]
    leaks = [(" ".join(o.args), s) for o in outputs for s in secrets if s in o.stdout + o.stderr]
    written = files_holding(secrets, tmp_path)
    assert not leaks and not written, (leaks, written)
    files = list(tmp_path.rglob("*"))
    assert any(p.suffix == ".db" for p in files)  # Dagster's own storage (runs, events) was searched
    assert any("compute_logs" in p.parts or p.suffix in (".out", ".err") for p in files)  # and its compute logs
    assert "Failed ProductImage #2 - error:" in (tmp_path / "progress.log").read_text()  # the failures were logged


def test_a_malformed_token_stops_the_run_without_a_retry_or_showing_it(env, sqlite_url, image_server):
    build_sample_shop(engine_for(sqlite_url), image_server, products=4, days=3, today=TODAY)
    result = run(MATERIALIZE, {**env, "REPLICATE_API_TOKEN": "r8_SECRETPART\tmore"})
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "REPLICATE_API_TOKEN holds spaces, line breaks" in output
    assert "SECRETPART" not in output and "STEP_UP_FOR_RETRY" not in output


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
