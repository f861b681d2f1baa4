"""Benchmarks: this project against its references, case by case, against the local emulator.

    scripts/benchmark [--scale 10] [--cases ceiling,baseline,...] [--write BENCHMARKS.md]

Each case starts the emulator (and an image server) in a process of their own with the case's settings, measures
this project and its reference in the same invocation, and prints one row; the table goes to stdout and, with
--write, into BENCHMARKS.md with the machine's description. `--scale S` divides latencies and multiplies rate limits
by S to keep runs short: ratios to the (scaled) ceiling are unchanged.
"""

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import similarity_cases
import similarity_scale
import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parents[1]
TOKEN = "r8_benchmark_token"
START = dt.date(2025, 1, 1)


# -- the emulator and its images, in a process of their own ------------------------------------------------------


class SyntheticImages:
    """Image bytes made on request ('b/123.png' -> distinct bytes): no memory for 100,000 images."""

    def get(self, key: str) -> bytes | None:
        if not key.startswith("b/"):
            return None
        return b"\x89PNG-benchmark-image-" + key.encode()


def _serve(pipe, latency, jitter, creates_per_minute, burst, log_requests):
    from collections import Counter

    from replicate_assets.testing.emulator import Emulator
    from replicate_assets.testing.sample_shop import ImageServer

    images = ImageServer(SyntheticImages())
    emulator = Emulator(
        latency=latency,
        jitter=jitter,
        creates_per_minute=creates_per_minute,
        burst=burst,
        token=TOKEN,
        log_requests=log_requests,  # off unless a case counts requests: a long case would hold every request
    ).start()
    pipe.send((emulator.base_url, images.base_url))
    while pipe.recv() == "requests":
        answers = Counter(r["status"] for r in emulator.creates())
        pipe.send({"per_input": emulator.creates_per_input(), "answers": dict(answers)})


class Servers:
    """The emulator and image server in a child process, for the `with` block."""

    def __init__(self, latency=0.0, jitter=0.0, creates_per_minute=None, burst=10, log_requests=False):
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, latency, jitter, creates_per_minute, burst, log_requests), daemon=True
        )

    def __enter__(self):
        self.process.start()
        self.base_url, self.images_url = self.pipe.recv()
        return self

    def requests(self) -> dict:
        """Accepted creates per input, and create answers by status (needs log_requests=True)."""
        self.pipe.send("requests")
        return self.pipe.recv()

    def __exit__(self, *exc):
        self.pipe.send("stop")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


# -- a shop and a real Dagster run on SQLite ----------------------------------------------------------------------


def build_shop(url: str, images: int, days: int, prefix: str = "") -> tuple[str, str]:
    """A shop with `images` images over `days` days from START, inserted in bulk; returns the partition range."""
    from replicate_assets.db import engine_for
    from replicate_assets.testing.sample_shop import create_shop_tables, shop_metadata

    engine = engine_for(url)
    create_shop_tables(engine, reset=True)
    tables = shop_metadata().tables
    stamp = dt.datetime.combine(START, dt.time(12))
    with engine.begin() as conn:
        conn.execute(
            tables["products"].insert(),
            [{"id": p, "name": f"p{p}", "created_at": stamp, "updated_at": stamp} for p in range(1, images // 2 + 2)],
        )
        rows = []
        for n in range(1, images + 1):
            created = stamp + dt.timedelta(days=(n - 1) * days // images)
            rows.append(
                {
                    "id": n,
                    "product_id": n // 2 + 1,
                    "path": f"b/{prefix}{n}.png",
                    "created_at": created,
                    "updated_at": created,
                }
            )
            if len(rows) == 10_000:
                conn.execute(tables["product_images"].insert(), rows)
                rows = []
        if rows:
            conn.execute(tables["product_images"].insert(), rows)
    return START.isoformat(), (START + dt.timedelta(days=days - 1)).isoformat()


def run_pipeline(servers: Servers, images: int, days: int = 3, **client) -> dict:
    """Materialize the chain over a fresh shop in a child process; returns clip_embeddings' metadata and peak RSS."""
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    shop_url = f"sqlite:///{work / 'shop.db'}"
    first, last = build_shop(shop_url, images, days)
    (work / "home").mkdir()
    (work / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    job = {
        "shop_url": shop_url,
        "images_url": servers.images_url,
        "base_url": servers.base_url,
        "first": first,
        "last": last,
        "home": str(work / "home"),
        "log": str(work / "progress.log"),
        "client": client,
    }
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, "DAGSTER_HOME": job["home"]},
    )
    if out.returncode:
        raise RuntimeError(f"pipeline run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)  # a 100,000-image shop is over a gigabyte
    return result


def child_run(job: dict) -> None:
    """In the child: one real Dagster run of the chain (in-process executor, instance on SQLite)."""
    import dagster as dg

    import replicate_assets
    from replicate_assets.chain import CHAIN_KEYS
    from replicate_assets.defs.resources import EmbeddingPolicy, ProgressLog, ReplicateResource, ShopDatabase

    defs = replicate_assets.defs()
    assets = [defs.get_assets_def(k) for k in CHAIN_KEYS]
    resources = {
        "shop": ShopDatabase(url=job["shop_url"], image_base_url=job["images_url"]),
        "replicate": ReplicateResource(api_token=TOKEN, base_url=job["base_url"], **job["client"]),
        "policy": EmbeddingPolicy(),
        "progress_log": ProgressLog(path=job["log"]),
    }
    with dg.DagsterInstance.from_config(job["home"]) as instance:
        result = dg.materialize(
            assets,
            resources=resources,
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": job["first"],
                "dagster/asset_partition_range_end": job["last"],
            },
        )
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("clip_embeddings")[0].metadata.items()}
    metadata["peak_rss_mb"] = peak_rss_mb()
    metadata["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(metadata, default=str))


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB (VmHWM).

    Not ru_maxrss: on Linux a child's starts at its parent's peak RSS (exec keeps it), so it measured this script.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss is the best there is (bytes on macOS, KB elsewhere)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


# -- references ----------------------------------------------------------------------------------------------------


def queue_workers(servers: Servers, images: int, workers: int) -> float:
    """The Laravel design: each worker takes one image, one sync request, stores it, takes the next. Images/s."""
    counter = iter(range(1, images + 1))
    lock = threading.Lock()
    done = []

    def worker():
        session = requests.Session()
        headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait"}
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            while True:
                answer = session.post(
                    f"{servers.base_url}/models/openai/clip/predictions",
                    headers=headers,
                    json={"input": {"image": f"{servers.images_url}/b/{n}.png"}},
                    timeout=120,
                )
                if answer.status_code != 429:
                    break
                time.sleep(answer.json().get("retry_after", 1))
            done.append(len(answer.json()["output"]["embedding"]))

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(done) / (time.monotonic() - started)


def bare_loop(servers: Servers, images: int, concurrency: int) -> float:
    """The least a client can do: POST, read the vector, nothing else; same concurrency. Images/s."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=5"}

    def one(n):
        body = {"input": {"image": f"{servers.images_url}/b/{n}.png"}}
        return len(
            session.post(
                f"{servers.base_url}/models/openai/clip/predictions", json=body, headers=headers, timeout=60
            ).json()["output"]["embedding"]
        )

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        count = sum(1 for _ in pool.map(one, range(1, images + 1)))
    return count / (time.monotonic() - started)


# -- the cases -----------------------------------------------------------------------------------------------------


def case_ceiling(scale: float, state: dict) -> list[dict]:
    limit = 600 * scale
    with Servers(latency=0.9 / scale, jitter=0.2 / scale, creates_per_minute=limit, burst=int(limit / 60)) as s:
        run = run_pipeline(s, 2000, max_predictions_per_minute=int(limit))
    ceiling = 10 * scale
    state["project_rate"] = run["images_per_second"]
    throttled = run["throttled_429"] / max(run["predictions_created"] + run["throttled_429"], 1)
    ok = run["images_per_second"] / ceiling >= 0.95 and throttled < 0.01
    return [
        row(
            "ceiling",
            f"openai/clip, latency {1 / scale:.2f} s ±10%, {limit:.0f} creates/min, 2,000 images",
            f"{run['images_per_second']:.1f} images/s = {run['images_per_second'] / ceiling:.3f} of the ceiling "
            f"({ceiling:.0f}/s); 429s: {throttled:.2%}",
            ">= 0.95, < 1% 429s",
            ok,
        )
    ]


def case_baseline(scale: float, state: dict) -> list[dict]:
    limit = 600 * scale
    with Servers(latency=0.9 / scale, jitter=0.2 / scale, creates_per_minute=limit, burst=int(limit / 60)) as s:
        if "project_rate" not in state:
            state["project_rate"] = run_pipeline(s, 2000, max_predictions_per_minute=int(limit))["images_per_second"]
        one = queue_workers(s, int(20 * scale), 1)
        two = queue_workers(s, int(40 * scale), 2)
    project = state["project_rate"]
    return [
        row(
            "queue-worker baseline",
            f"same emulator; one request at a time per worker ({int(20 * scale)} and {int(40 * scale)} images)",
            f"1 worker {one:.1f}/s, 2 workers {two:.1f}/s; this project "
            f"{project:.1f}/s = {project / one:.1f}x and {project / two:.1f}x",
            ">= 4x two workers",
            project / two >= 4,
        )
    ]


def case_batching(scale: float, state: dict) -> list[dict]:
    # The emulator's own work per image does not shrink with the scale: this case runs in real time.
    with Servers(latency=0.9, jitter=0.2, creates_per_minute=600, burst=10) as s:
        run = run_pipeline(s, 5000, model="andreasjansson/clip-features", batch_size=50, max_predictions_per_minute=600)
    ratio = run["images_per_second"] / 10
    return [
        row(
            "batching",
            "clip-features, 50 images/prediction, latency 1 s ±10%, 600 creates/min, 5,000 images (real time)",
            f"{run['images_per_second']:.1f} images/s = {ratio:.1f}x the single-image ceiling "
            f"(10/s); {run['predictions_created']} predictions",
            ">= 10",
            ratio >= 10,
        )
    ]


def case_overhead(scale: float, state: dict) -> list[dict]:
    with Servers() as s:
        bare = bare_loop(s, 5000, 16)
        run = run_pipeline(s, 20_000, max_predictions_per_minute=10_000_000, max_in_flight=16)
        bare_after = bare_loop(s, 5000, 16)
    reference = (bare + bare_after) / 2
    ratio = run["images_per_second"] / reference
    return [
        row(
            "overhead",
            "latency 0, no limit, 20,000 images, Dagster run on SQLite vs a bare HTTP loop, 16 in flight",
            f"pipeline {run['images_per_second']:.0f}/s, bare loop {reference:.0f}/s (emulator's raw "
            f"rate) = {ratio:.2f}",
            ">= 0.8",
            ratio >= 0.8,
        )
    ]


def case_memory(scale: float, state: dict) -> list[dict]:
    with Servers() as s:
        small, big = (run_pipeline(s, n, days=30, max_predictions_per_minute=10_000_000) for n in (20_000, 100_000))
    ok = big["peak_rss_mb"] < 500 and big["peak_rss_mb"] < small["peak_rss_mb"] * 1.25
    return [
        row(
            "memory",
            "one range run over 100,000 images (and one over 20,000), 30 days each",
            f"peak RSS of the run process {big['peak_rss_mb']:.0f} MB (20,000 images: {small['peak_rss_mb']:.0f} MB); "
            f"{big['images_per_second']:.0f} images/s (20,000: {small['images_per_second']:.0f}/s)",
            "< 500 MB, about the same (within 25%)",
            ok,
        )
    ]


def case_writes(scale: float, state: dict) -> list[dict]:
    rows = []
    for name, url in write_targets():
        try:
            rate = upsert_rate(url, 100_000)
        except sa.exc.OperationalError as err:
            rows.append(row("writes", f"100,000 rows, {name}", f"not measured: {err.orig}", ">= 5,000 rows/s", False))
            continue
        rows.append(
            row(
                "writes",
                f"100,000 embeddings upserted into product_embeddings, {name}",
                f"{rate:,.0f} rows/s",
                ">= 5,000 rows/s",
                rate >= 5000,
            )
        )
        drop(url)
    return rows


def drop(url: str) -> None:
    """Remove a benchmark database: each holds about 1.5 GB."""
    from replicate_assets.db import engine_for

    parsed = sa.make_url(url)
    engine_for(url).dispose()
    if parsed.get_backend_name() == "sqlite":
        shutil.rmtree(Path(parsed.database).parent, ignore_errors=True)
        return
    server = "postgres" if parsed.get_backend_name() == "postgresql" else "mysql"
    admin = sa.create_engine(parsed.set(database=server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {parsed.database}"))


def write_targets() -> list[tuple[str, str]]:
    work = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    targets = [("SQLite", f"sqlite:///{work / 'shop.db'}")]
    for name, admin, kind in (
        ("PostgreSQL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", "pg"),
        ("MariaDB", "mysql+pymysql://root@127.0.0.1:3306/mysql", "my"),
    ):
        database = f"replicate_assets_bench_{kind}"
        try:
            engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
                conn.execute(sa.text(f"CREATE DATABASE {database}"))
            targets.append((name, str(sa.make_url(admin).set(database=database).render_as_string(False))))
        except sa.exc.OperationalError as err:
            print(f"{name}: not measured ({err.orig})", file=sys.stderr)
    return targets


def upsert_rate(url: str, count: int) -> float:
    """Time embedding_table's write (publish_embeddings) of `count` indexed outcomes into product_embeddings."""
    from replicate_assets.db import EmbeddingStore, Window, connect, utcnow

    build_shop(url, count, 30)
    schema = connect(url)
    schema.migrate()
    vector = json.loads(json.dumps([round((i % 97) / 97 - 0.5, 6) for i in range(768)]))
    now = utcnow()
    with schema.engine.begin() as conn:
        for start in range(1, count + 1, 5000):
            conn.execute(
                schema.outcomes.insert(),
                [
                    {
                        "product_image_id": n,
                        "model": "openai/clip",
                        "product_id": n // 2 + 1,
                        "image_url": f"u/{n}",
                        "url_hash": str(n),
                        "status": "indexed",
                        "embedding": vector,
                        "dimensions": 768,
                        "attempts": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in range(start, min(start + 5000, count + 1))
                ],
            )
    started = time.monotonic()
    written = sum(EmbeddingStore(schema).publish(Window(), "openai/clip", 1000))
    elapsed = time.monotonic() - started
    assert written == count, (written, count)
    return written / elapsed


def case_backfill(scale: float, state: dict) -> list[dict]:
    import dagster as dg

    from replicate_assets.chain import materialize_command

    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    shop_url = f"sqlite:///{work / 'shop.db'}"
    with Servers() as s:
        first, last = build_shop(shop_url, 730, 365)
        home = work / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text((PROJECT / "deploy" / "dagster.yaml").read_text())
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DATABASE_URL": shop_url,
            "IMAGE_BASE_URL": s.images_url,
            "REPLICATE_BASE_URL": s.base_url,
            "REPLICATE_API_TOKEN": TOKEN,
            "REPLICATE_MAX_PREDICTIONS_PER_MINUTE": "100000",
            "REPLICATE_EMBEDDINGS_LOG": str(work / "p.log"),
        }
        started = time.monotonic()
        out = subprocess.run(
            materialize_command(first, last),
            env=env,
            cwd=PROJECT,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        work_seconds = sum((s.end_time or 0) - (s.start_time or 0) for s in instance.get_run_step_stats(runs[0].run_id))
        partitions = len(instance.get_materialized_partitions(dg.AssetKey("embedding_table")))
    beyond = wall - work_seconds
    return [
        row(
            "backfill",
            "365 daily partitions, 730 images, `dagster asset materialize --partition-range`",
            f"{len(runs)} run, {partitions} partitions materialized; wall {wall:.1f} s, steps {work_seconds:.1f} s,"
            f" beyond the work {beyond:.1f} s",
            "1 run, < 30 s",
            len(runs) == 1 and beyond < 30,
        )
    ]


def cli_env(servers: Servers, shop_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's `dagster asset materialize` against the benchmark's servers."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": shop_url,
        "IMAGE_BASE_URL": servers.images_url,
        "REPLICATE_BASE_URL": servers.base_url,
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_EMBEDDINGS_LOG": str(home / "p.log"),
        **extra,
    }


def case_resume(scale: float, state: dict) -> list[dict]:
    """kill -9 at several moments, then a second run: creates per image over both runs, and what resuming cost."""
    import dagster as dg

    from replicate_assets.chain import materialize_command

    images, rows = 400, []
    for fraction in (0.1, 0.5, 0.9):
        work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
        shop_url = f"sqlite:///{work / 'shop.db'}"
        home = work / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text((PROJECT / "deploy" / "dagster.yaml").read_text())
        latency = 1.0 / scale
        with Servers(latency=latency, jitter=latency / 2, creates_per_minute=600 * scale, log_requests=True) as s:
            first, last = build_shop(shop_url, images, 3, prefix=f"resume-{fraction}-")
            env = cli_env(s, shop_url, home, REPLICATE_MAX_PREDICTIONS_PER_MINUTE=str(int(600 * scale)))
            command = materialize_command(first, last)
            process = subprocess.Popen(
                command,
                env=env,
                cwd=PROJECT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            while sum(s.requests()["per_input"].values()) < images * fraction and process.poll() is None:
                time.sleep(0.02)
            os.killpg(process.pid, 9)
            process.wait()
            time.sleep(latency * 2)
            killed_at = sum(s.requests()["per_input"].values())
            started = time.monotonic()
            rerun = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600)
            wall = time.monotonic() - started
            if rerun.returncode:
                raise RuntimeError(rerun.stderr[-3000:])
            per_input = s.requests()["per_input"]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey("clip_embeddings"))
            metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        shutil.rmtree(work, ignore_errors=True)
        per_image = sum(per_input.values()) / images
        ok = per_image == 1.0 and len(per_input) == images
        rows.append(
            row(
                "resume",
                f"kill -9 after {killed_at} of {images} creates ({fraction:.0%}), then the same command again",
                f"{per_image:.2f} creates per image ({len(per_input)} images); the re-run took over "
                f"{metadata['predictions_taken_over']} predictions with {metadata['prediction_list_requests']} list "
                f"requests in {metadata['resume_seconds']:.2f} s (whole re-run {wall:.1f} s)",
                "1.00 creates per image",
                ok,
            )
        )
    return rows


def case_throttled(scale: float, state: dict) -> list[dict]:
    """An account with little credit: 6 creates a minute, bursts of one (x scale), the client set to 600 a minute."""
    limit = 6 * scale
    with Servers(latency=1.0 / scale, creates_per_minute=limit, burst=1, log_requests=True) as s:
        run = run_pipeline(s, 30, max_predictions_per_minute=600)
        answers = s.requests()["answers"]
    created, refused = answers.get(201, 0), answers.get(429, 0)
    rate = run["images_per_second"] / (limit / 60)
    return [
        row(
            "throttled",
            f"6 creates/min, bursts of one (x{scale:g}: {limit:g}/min), 30 images, client limit 600/min",
            f"{refused} of {created + refused} creates answered 429 ({refused / max(created, 1):.0%} of the "
            f"predictions); {rate:.2f} of the account's limit",
            "429s <= 25% of predictions",
            refused <= created / 4,
        )
    ]


def row(case, setting, measured, target, ok) -> dict:
    return {"case": case, "setting": setting, "measured": measured, "target": target, "met": "yes" if ok else "NO"}


CASES = {
    "ceiling": case_ceiling,
    "baseline": case_baseline,
    "batching": case_batching,
    "overhead": case_overhead,
    "writes": case_writes,
    "memory": case_memory,
    "backfill": case_backfill,
    "resume": case_resume,
    "throttled": case_throttled,
    **similarity_cases.CASES,
    **similarity_scale.CASES,
}


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB, Python "
        f"{platform.python_version()}, SQLAlchemy {sa.__version__}"
    )


def table(rows: list[dict]) -> str:
    lines = ["| case | setting | measured | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['setting']} | {r['measured']} | {r['target']} | {r['met']} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0, help="time-scale factor (default 10)")
    default = [name for name in CASES if name not in similarity_scale.CASES]  # those take 30 to 60 minutes each
    parser.add_argument("--cases", default=",".join(default), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--write", metavar="FILE", help="append the results to this Markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_run(json.loads(args.child))
        return 0
    print(
        f"machine: {machine()}; time scale x{args.scale:g} (latency / {args.scale:g}, limits x {args.scale:g}; "
        "the batching case runs in real time)",
        flush=True,
    )
    rows, state = [], {}
    try:
        for name in args.cases.split(","):
            started = time.monotonic()
            found = CASES[name](args.scale, state)
            rows += found
            for r in found:
                took = time.monotonic() - started
                print(f"{r['case']}: {r['measured']} (target {r['target']}: {r['met']}) [{took:.0f} s]", flush=True)
    finally:
        similarity_cases.cleanup(state)  # the 100,000-image shop the similarity cases share (about 2 GB)
    print()
    print(table(rows))
    if args.write:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(args.write, "a") as out:
            out.write(f"\n### Run of {stamp}\n\n{machine()}; time scale x{args.scale:g}.\n\n{table(rows)}\n")
    return 0 if all(r["met"] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
