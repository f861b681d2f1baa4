"""Shared fixtures: the emulator and an image server on loopback, shop databases on SQLite, PostgreSQL, MariaDB.

PostgreSQL and MariaDB tests skip with a reason where no server answers, except under CI (CI=true), where a
missing server is a failure: CI must run them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests
import sqlalchemy as sa

# Read when replicate_assets loads: step retries after 1 s (not 60) keep the retry tests short.
os.environ["REPLICATE_RETRY_DELAY_SECONDS"] = "1"

from replicate_assets.chain import CHAIN_KEYS, materialize_command
from replicate_assets.db import engine_for
from replicate_assets.db import schema as schema_module
from replicate_assets.defs.embeddings.sensors import range_tags
from replicate_assets.defs.resources import (
    EmbeddingPolicy,
    ProgressLog,
    ReplicateResource,
    ShopDatabase,
    SimilarityOptions,
)
from replicate_assets.testing.emulator import Emulator, embedding_for
from replicate_assets.testing.emulator.model import MAX_IMAGE_BYTES
from replicate_assets.testing.sample_shop import ImageServer, SampleShop, build_sample_shop

TOKEN = "r8_test_token_0123456789"
TODAY = dt.date(2025, 1, 17)  # the sample shop's images fall on 2025-01-15, -16 and -17
DAYS = ["2025-01-15", "2025-01-16", "2025-01-17"]
SERVER_URLS = {
    "postgresql": os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
    "mariadb": os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests outside unit/ are integration tests (HTTP, databases, Dagster runs, the UI): `-m "not integration"`
    runs the unit layer alone."""
    for item in items:
        if "unit" not in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


def server_database(kind: str) -> str:
    """A fresh database on the server of `kind`; skips (or fails under CI) when the server is down."""
    admin_url = SERVER_URLS[kind]
    name = f"replicate_assets_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        admin.dispose()
    except sa.exc.OperationalError as err:
        message = f"no {kind} server at {sa.make_url(admin_url).render_as_string()}: {err.orig}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must run the {kind} tests)")
        pytest.skip(message)
    return str(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))


def drop_server_database(url: str) -> None:
    parsed = sa.make_url(url)
    engine_for(url).dispose()
    engine_for.cache_clear()
    admin = sa.create_engine(
        parsed.set(database="postgres" if parsed.get_backend_name() == "postgresql" else "mysql"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        if parsed.get_backend_name() == "postgresql":
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {parsed.database} WITH (FORCE)"))
        else:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {parsed.database}"))
    admin.dispose()


@pytest.fixture(scope="session")
def pgvector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """PostgreSQL with pgvector from the `pgserver` wheel (a dev dependency on Linux x86_64), on a unix socket."""
    try:
        import pgserver
    except ImportError as err:
        message = f"no pgserver here ({err}): it bundles PostgreSQL with pgvector (pip install pgserver)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the pgvector test")
        pytest.skip(message)
    server = pgserver.get_server(tmp_path_factory.mktemp("pgvector"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def pgvector_url(pgvector_server) -> Iterator[str]:
    """A fresh database on the pgvector server."""
    name = f"replicate_assets_test_{uuid.uuid4().hex[:8]}"
    pgvector_server.psql(f"CREATE DATABASE {name};")
    url = sa.make_url(pgvector_server.get_uri()).set(drivername="postgresql+psycopg2", database=name)
    yield url.render_as_string(hide_password=False)
    engine_for.cache_clear()
    pgvector_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest.fixture(autouse=True)
def _fresh_schema_cache() -> Iterator[None]:
    schema_module._connect.cache_clear()
    yield
    schema_module._connect.cache_clear()


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator(token=TOKEN) as running:
        yield running


@pytest.fixture
def fresh_emulator(emulator: Emulator) -> Emulator:
    """The session's emulator with its request log emptied and default behaviour."""
    deadline = time.monotonic() + 10
    while emulator.in_flight and time.monotonic() < deadline:  # a hung answer of an earlier test
        time.sleep(0.05)
    with emulator.lock:
        emulator.requests.clear()
        emulator.predictions.clear()  # a fresh account: nothing earlier tests created can be listed or taken over
        emulator.ordered.clear()
        emulator.unremoved.clear()
        emulator.faults.clear()
        emulator.create_requests = emulator.max_in_flight = 0
        emulator.throttled_until = 0.0
    emulator.latency, emulator.retention = 0.0, 3600.0
    emulator.model.download_timeout, emulator.model.max_image_bytes = 10.0, MAX_IMAGE_BYTES
    return emulator


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def shop_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A shop database URL on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.db'}"
        return
    url = server_database(request.param)
    yield url
    drop_server_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shop.db'}"


@pytest.fixture
def shop(shop_url: str, image_server: ImageServer) -> SampleShop:
    return build_sample_shop(engine_for(shop_url), image_server, products=30, days=3, today=TODAY)


@pytest.fixture
def resources(shop_url: str, image_server: ImageServer, fresh_emulator: Emulator, tmp_path: Path) -> dict:
    return make_resources(shop_url, image_server, fresh_emulator, tmp_path)


def make_resources(
    shop_url: str, image_server: ImageServer, emulator: Emulator, tmp_path: Path, policy: dict | None = None, **client
) -> dict:
    client.setdefault("max_predictions_per_minute", 60_000)  # tests of the limiter set their own
    client.setdefault("backoff_seconds", 0.05)
    return {
        "shop": ShopDatabase(url=shop_url, image_base_url=image_server.base_url),
        "replicate": ReplicateResource(api_token=TOKEN, base_url=emulator.base_url, **client),
        "policy": EmbeddingPolicy(**{"retry_delay_seconds": 1, **(policy or {})}),
        "progress_log": ProgressLog(path=str(tmp_path / "logs" / "replicate_embeddings.log")),
    }


def definitions() -> dg.Definitions:
    """The code location as Dagster loads it (settings from this process's environment)."""
    import replicate_assets

    return replicate_assets.defs()


def materialize_chain(
    resources: dict,
    *,
    partition: str | None = None,
    first: str | None = None,
    last: str | None = None,
    instance: dg.DagsterInstance | None = None,
    selection: list | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialize the three assets and the checks through a real in-process Dagster run."""
    defs = definitions()
    assets = [defs.get_assets_def(key) for key in CHAIN_KEYS]
    checks = [c for c in defs.asset_checks if any(k.asset_key.path[0] in CHAIN_KEYS for k in c.check_keys)]
    tags = range_tags(first, last) if first else None
    return dg.materialize(
        [*assets, *checks] if selection is None else selection,
        resources=resources,
        partition_key=partition,
        tags=tags,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def similarity_run(
    resources: dict,
    tmp_path: Path,
    full: bool = False,
    instance: dg.DagsterInstance | None = None,
    selection: tuple[str, ...] = ("product_similarities", "similarity_index"),
    k: int = 5,
) -> dg.ExecuteInProcessResult:
    """Materialize the similarity assets in `selection` with their checks; no assets: run every similarity check
    alone, on the tables and files as they are (the UI's "Execute checks")."""
    defs = definitions()
    group = [dg.AssetKey(name) for name in ("product_similarities", "similarity_index")]
    resources = {**resources, "similarity": SimilarityOptions(k=k, index_folder=str(tmp_path / "index"))}
    instance = instance or dg.DagsterInstance.ephemeral()
    if not selection:
        job = dg.define_asset_job("similarity_checks", selection=dg.AssetSelection.checks_for_assets(*group))
        checks_only = dg.Definitions(
            assets=[defs.get_assets_def(key) for key in group],
            asset_checks=[c for c in defs.asset_checks if any(k.asset_key in group for k in c.check_keys)],
            jobs=[job],
            resources=resources,
        )
        return checks_only.resolve_job_def("similarity_checks").execute_in_process(
            instance=instance, raise_on_error=False
        )
    assets = [defs.get_assets_def(name) for name in selection]
    checks = [c for c in defs.asset_checks if any(k.asset_key.path[0] in selection for k in c.check_keys)]
    config = (
        {"ops": {"product_similarities": {"config": {"full_rebuild": full}}}}
        if "product_similarities" in selection
        else None
    )
    return dg.materialize(
        [*assets, *checks], resources=resources, run_config=config, instance=instance, raise_on_error=False
    )


BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[1]


def workdir(env: dict[str, str]) -> Path:
    """Where a command a test starts runs: beside the test's own Dagster home, else a new temporary folder; never
    the project tree, which tests running in parallel would see change (Dagster's CLI, without DAGSTER_HOME,
    makes and removes `.tmp_dagster_home_*` in its working directory)."""
    home = env.get("DAGSTER_HOME")
    return Path(home).parent if home else Path(tempfile.mkdtemp(prefix="replicate-assets-cmd-"))


def run(
    command: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        env=env,
        cwd=cwd or workdir(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


NOT_SCANNED = {".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"}


def project_files() -> set[Path]:
    """The project tree's files, without the virtualenv, git's objects and caches (which no test writes)."""
    found = set()
    for folder, folders, files in os.walk(PROJECT):
        folders[:] = [f for f in folders if f not in NOT_SCANNED and not f.endswith(".egg-info")]
        found.update(Path(folder, name) for name in files)
    return found


def files_holding(secrets: list[str], *roots: Path) -> list[tuple[str, str]]:
    """(file, secret) for every secret found in a file under `roots` (a test's own folders) or in the project
    tree."""
    files = {p for root in roots for p in root.rglob("*") if p.is_file()} | project_files()
    found = []
    for path in sorted(files):
        if path.stat().st_size < 50e6:
            content = path.read_bytes()
            found += [(str(path), secret) for secret in secrets if secret.encode() in content]
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._project_files = project_files()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """No test writes into the project tree: a file that appeared there during the run fails the suite."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks once, at the end
        return
    appeared = sorted(str(p.relative_to(PROJECT)) for p in project_files() - session.config._project_files)
    if appeared:
        print(f"\nERROR: tests wrote into the project tree: {appeared[:20]}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def chain_command(first: str, last: str | None = None) -> list[str]:
    """The chain's `dagster asset materialize` over first...last (one day without `last`), for `run`."""
    return ["dagster", *materialize_command(first, last or first)[1:]]


def assert_every_good_image_stored(url: str, shop: SampleShop, image_server: ImageServer) -> None:
    """Every image of `shop` but its broken ones has one row in product_embeddings, with its bytes' embedding."""
    with engine_for(url).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT e.product_image_id, e.embedding, i.path FROM product_embeddings e "
                "JOIN product_images i ON i.id = e.product_image_id"
            )
        ).all()
        images = conn.execute(sa.text("SELECT COUNT(*) FROM product_images")).scalar_one()
    assert len(rows) == len({r.product_image_id for r in rows}) == images - len(shop.broken)
    for row in rows:
        key = row.path.removeprefix(image_server.base_url + "/")
        vector = row.embedding if isinstance(row.embedding, list) else json.loads(row.embedding)
        assert vector == embedding_for(image_server.images[key])


def ignore_ctrl_c() -> None:
    """A `preexec_fn`: the child starts with SIGINT ignored, as a shell's background job does (and Python keeps it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop(process: subprocess.Popen, sent: int = signal.SIGTERM, grace: float = 20) -> tuple[str, str]:
    """Stop a server started by a test as a user would (SIGTERM or Ctrl-C); SIGKILL only if it outlives `grace`
    seconds (a loaded CI machine), so a stuck server never hangs the suite. Returns its remaining output."""
    process.send_signal(sent)
    try:
        return process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


@pytest.fixture
def env(sqlite_url, image_server, fresh_emulator, tmp_path):
    """The environment a user would export, pointing at the emulator and a sample shop."""
    values = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "DAGSTER_"))}
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    values.update(
        DATABASE_URL=sqlite_url,
        IMAGE_BASE_URL=image_server.base_url,
        REPLICATE_API_TOKEN=TOKEN,
        REPLICATE_BASE_URL=fresh_emulator.base_url,
        DAGSTER_HOME=str(home),
        REPLICATE_EMBEDDINGS_LOG=str(tmp_path / "progress.log"),
        REPLICATE_MAX_PREDICTIONS_PER_MINUTE="60000",
    )
    return values


# -- search: a shop embedded and listed, and `replicate-assets serve` over it ------------------------------------


@pytest.fixture
def searchable(shop_url, image_server, fresh_emulator, tmp_path):
    """A shop whose images are embedded and whose similarity lists and index are built; the environment a user
    would export to search it."""
    return make_searchable(shop_url, image_server, fresh_emulator, tmp_path)


def make_searchable(url: str, image_server, emulator, tmp_path: Path, products: int = 40) -> tuple[SampleShop, dict]:
    """Build a sample shop at `url`, embed it and build its lists and index: (the shop, the environment to search
    it with, the emulator's request log emptied)."""
    shop = build_sample_shop(engine_for(url), image_server, products=products, days=3, today=TODAY)
    resources = make_resources(url, image_server, emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    assert similarity_run(resources, tmp_path).success
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "DAGSTER_", "SEARCH_"))}
    env.update(
        DATABASE_URL=url,
        IMAGE_BASE_URL=image_server.base_url,
        REPLICATE_API_TOKEN=TOKEN,
        REPLICATE_BASE_URL=emulator.base_url,
        SIMILARITY_INDEX_DIR=str(tmp_path / "index"),
    )
    with emulator.lock:
        emulator.requests.clear()
        emulator.create_requests = 0
    return shop, env


def creates(emulator) -> int:
    with emulator.lock:
        return emulator.create_requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(env: dict, *arguments: str) -> tuple[subprocess.Popen, str, requests.Response]:
    """`replicate-assets serve` on a free port, once it answers /health: (process, base URL, that answer)."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "replicate-assets"), "serve", *arguments, "--port", str(port)],
        env=env,
        cwd=workdir(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise AssertionError(server.communicate()[1])
        try:
            return server, base, requests.get(f"{base}/health", timeout=2)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                stop(server)
                raise AssertionError("the API did not answer /health within 60 s") from None
            time.sleep(0.2)
