"""The README's first command: the demo, on embedded defaults, in a fresh directory."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import requests
import sqlalchemy as sa
from conftest import free_port, ignore_ctrl_c, stop

from replicate_assets.db import engine_for


def test_demo_embeds_every_product_with_a_good_image(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "DAGSTER_", "DATABASE_URL"))}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("replicate-assets")), "demo", "--products", "60", "--days", "4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the Dagster run succeeded" in result.stdout

    engine = engine_for(f"sqlite:///{tmp_path / 'data' / 'shop.db'}")
    with engine.connect() as conn:
        without = conn.execute(
            sa.text(
                "SELECT DISTINCT i.product_id FROM product_images i JOIN clip_embedding_outcomes o "
                "ON o.product_image_id = i.id AND o.status = 'indexed' "
                "WHERE i.product_id NOT IN (SELECT product_id FROM product_embeddings)"
            )
        ).all()
        failed = conn.execute(
            sa.text("SELECT product_image_id, error FROM clip_embedding_outcomes WHERE status = 'failed'")
        ).all()
        images = conn.execute(sa.text("SELECT COUNT(*) FROM product_images")).scalar_one()
        stored = conn.execute(sa.text("SELECT COUNT(*) FROM product_embeddings")).scalar_one()
    assert without == []  # every product with a good image has an embedding
    assert len(failed) == 2 and all(error for _, error in failed)  # the demo breaks two of its first 60 images
    assert stored == images - len(failed)
    for image_id, _ in failed:
        assert f"ProductImage #{image_id} of Product" in result.stdout  # reported by `status`
    log = (tmp_path / "logs" / "replicate_embeddings.log").read_text()
    assert log.count("Indexed ProductImage #") == stored
    assert (tmp_path / ".dagster_home" / "dagster.yaml").exists()
    # The demo's partitions start at its first day: the UI shows its 4 days, not every day since 2024.
    first_day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)).isoformat()
    assert f"PRODUCT_IMAGES_START_DATE={first_day} .venv/bin/dagster dev -w workspace.yaml" in result.stdout
    with dg.DagsterInstance.from_config(str(tmp_path / ".dagster_home")) as instance:
        assert len(instance.get_materialized_partitions(dg.AssetKey("embedding_table"))) == 4
    # It ends with what the shop's pages would show, and it means something (the emulator's stand-in semantics):
    # product 1's neighbours share its category, and the words "red bag" find red leather bags.
    after_similar = result.stdout.split("Products similar to #1 (")[1]
    category = after_similar.split(")")[0]
    neighbours = after_similar.split("\n")[1:6]
    assert len(neighbours) == 5 and all(category.capitalize() in line for line in neighbours), neighbours
    found = result.stdout.split('Products for the words "red leather bag"')[1].split("\n")[1:6]
    assert len(found) == 5 and all("Red leather bag" in line for line in found), found

    # The search command it prints works as printed, after the demo (its emulator gone: the query is cached).
    lines = result.stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("Search it over HTTP"))
    assignments = lines[at + 1].strip().removesuffix(" .venv/bin/replicate-assets serve")
    url = lines[at + 2].strip().removeprefix("curl '").rstrip("'")
    served_env = {**env, **dict(a.split("=", 1) for a in assignments.split())}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("replicate-assets")), "serve"],
        cwd=tmp_path,
        env=served_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        answer = None
        for _ in range(120):
            try:
                answer = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.25)
        assert answer is not None and answer.status_code == 200, answer and answer.text
        body = answer.json()
        assert body["cached"] is True and len(body["results"]) == 3
        page = next(line for line in lines if line.startswith("Look at it in a browser: ")).split()[6]
        shown = requests.get(page, timeout=30)  # the words are cached: the page answers them offline too
        assert shown.status_code == 200 and "answered from the cache" in shown.text
        assert shown.text.count('class="card"') >= 10 and "Red leather bag" in shown.text
    finally:
        server.terminate()
        server.communicate(timeout=20)


def test_the_demo_kept_up_shows_the_page_with_its_pictures(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "DAGSTER_", "DATABASE_URL"))}
    bin_dir = Path(sys.executable).parent
    demo = subprocess.Popen(
        [str(bin_dir / "replicate-assets"), "demo", "--products", "20", "--days", "2", "--serve"],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=ignore_ctrl_c,
    )
    server = None
    try:
        lines = []
        while not lines or not lines[-1].startswith("The page with pictures"):
            line = demo.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        assignments = demo.stdout.readline().strip().removesuffix(" .venv/bin/replicate-assets serve")
        served = {**env, **dict(a.split("=", 1) for a in assignments.split())}
        port = free_port()  # the other demo test holds the printed 8000
        server = subprocess.Popen(
            [str(bin_dir / "replicate-assets"), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=served,
            stdout=subprocess.PIPE,
            text=True,
        )
        answer = None
        for _ in range(120):
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/?like=1", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.25)
        assert answer is not None and answer.status_code == 200, answer and answer.text
        pictures = [part.split('"')[0] for part in answer.text.split('src="')[1:]]
        assert len(pictures) > 5
        for src in pictures:
            picture = requests.get(f"http://127.0.0.1:{port}{src}", timeout=30)
            assert picture.status_code == 200 and picture.headers["content-type"] == "image/png", src
    finally:
        if server is not None:
            stop(server, signal.SIGINT)
        out, _ = stop(demo, signal.SIGINT)
    # Ctrl-C stops the demo although it was started with SIGINT ignored, and the demo says so.
    assert demo.returncode == 0 and out.strip().endswith("stopped"), out
