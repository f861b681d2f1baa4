"""The search API at the shop's edge, through real uvicorn (`replicate-assets serve`): one payment per distinct query
whatever the concurrency and the process; every error JSON of one shape with the right status; no secret in any
answer; a bounded load of mixed requests with no 5xx."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import statistics
import time

import pytest
import requests
from conftest import creates, drop_server_database, make_searchable, run, server_database, start_serve, stop
from test_search import TEXT

from replicate_assets.api.app import loopback

SHAPE = {"status", "title", "detail"}


def ask(base: str, path: str, method: str = "GET", **params) -> requests.Response:
    return requests.request(method, base + path, params=params or None, timeout=60)


def assert_problem(answer: requests.Response, status: int, words: str) -> dict:
    """An error answer: the status, JSON of the one shape, and words that say what to do."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert set(body) >= SHAPE and body["status"] == status and words in body["detail"], body
    return body


def test_identical_queries_at_once_pay_once_across_servers_and_the_cli(searchable, fresh_emulator):
    """8 spellings of one new query at once on two servers, and the CLI at the same moment: one prediction."""
    _, env = searchable
    env = {**env, "SEARCH_QUERIES_PER_MINUTE": "100"}
    fresh_emulator.latency = 1.0  # every asker arrives while the first is paying
    servers = [start_serve(env) for _ in range(2)]
    try:
        spellings = ["blue running shoe", "Blue  Running SHOE ", "BLUE running shoe", "\tblue running shoe\n"]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            cli = pool.submit(run, ["replicate-assets", "search", "--text", "Blue running shoe", "--json"], env)
            answers = list(
                pool.map(
                    lambda n: ask(servers[n % 2][1], "/search", text=spellings[n % len(spellings)], limit=5), range(8)
                )
            )
            cli_done = cli.result()
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
        assert cli_done.returncode == 0, cli_done.stderr
        results = {str(a.json()["results"]) for a in answers}
        assert len(results) == 1  # the same answer for every spelling
        assert {a.json()["query"]["text"] for a in answers} == {"blue running shoe"}
        assert creates(fresh_emulator) == 1
        paid = [a.json()["cached"] for a in answers] + [json.loads(cli_done.stdout)["cached"]]
        assert paid.count(False) == 1  # exactly one asker paid; the others were told it was cached
    finally:
        for server, _, _ in servers:
            stop(server, signal.SIGINT)


@pytest.mark.parametrize("shop_url", ["sqlite"], indirect=True)
def test_every_bad_request_is_a_json_4xx_that_costs_nothing(searchable, fresh_emulator, shop_url):
    _, env = searchable
    server, base, _ = start_serve(env)
    try:
        cases = [
            ("/search", {"text": "red\x00bag"}, 400, "control or unassigned character (U+0000)"),
            ("/search", {"text": "red\x1b[31mbag"}, 400, "U+001B"),
            ("/search", {"text": "   "}, 400, "text is empty"),
            ("/search", {"text": "x" * 400}, 400, "at most 300"),
            ("/search", {"text": "bag", "min_score": "nan"}, 400, "min_score='nan' is not a number"),
            ("/search", {"text": "bag", "min_score": "inf"}, 400, "is not a number"),
            ("/search", {"text": "bag", "limit": "\u0661\u0660"}, 400, "is not a whole number"),
            ("/search", {"text": "bag", "limit": "1000"}, 400, "between 1 and 100"),
            ("/search", {"image": "javascript:alert(1)"}, 400, "http(s) URL"),
            ("/products/99999999999999999999999999/similar", {}, 404, "does not exist"),
            ("/products/0/similar", {}, 404, "does not exist"),
            ("/products/abc/similar", {}, 400, "is not a whole number"),
            ("/nowhere", {}, 404, "no such route: /nowhere"),
        ]
        for path, params, status, words in cases:
            assert_problem(ask(base, path, **params), status, words)
        assert_problem(ask(base, "/search", "POST", text="bag"), 405, "POST is not allowed here: use GET")
        assert creates(fresh_emulator) == 0
    finally:
        out, err = stop(server, signal.SIGINT)
    assert "Traceback" not in out + err


@pytest.mark.parametrize("shop_url", ["sqlite"], indirect=True)
def test_an_image_the_model_cannot_load_is_a_422_in_words_with_no_secret(
    searchable, fresh_emulator, image_server, shop_url
):
    _, env = searchable
    signature = "SIGnotshown0123"
    server, base, _ = start_serve({**env, "SEARCH_QUERIES_PER_MINUTE": "100"})
    image_server.statuses["private.png"] = 403
    try:
        cases = {
            f"http://127.0.0.1:9/leak.png?X-Amz-Signature={signature}": "its host could not be reached",
            f"http://user:{signature}@127.0.0.1:9/leak.png": "its host could not be reached",
            f"{image_server.base_url}/private.png?X-Goog-Signature={signature}": "refused access (HTTP 403)",
            f"{image_server.base_url}/gone.png?sig={signature}": "answered 404 Not Found",
            f"http://no-such-host.invalid/a.png?sig={signature}": "its host name is unknown",
        }
        for url, words in cases.items():
            answer = ask(base, "/search", image=url)
            body = assert_problem(answer, 422, words)
            assert signature not in answer.text and "Connection refused" not in body["detail"], body
        cli = run(["replicate-assets", "search", "--image", next(iter(cases))], env)
        assert cli.returncode == 1 and signature not in cli.stdout + cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
    finally:
        image_server.statuses.clear()
        out, err = stop(server, signal.SIGINT)
    assert signature not in out + err  # the server's own log


@pytest.mark.postgres
def test_a_shop_database_gone_is_a_503_with_retry_after_and_health_says_so(image_server, fresh_emulator, tmp_path):
    url = server_database("postgresql")
    _, env = make_searchable(url, image_server, fresh_emulator, tmp_path, products=20)
    server, base, health = start_serve(env)
    dropped = False
    try:
        assert health.status_code == 200 and health.json()["database"] == "ok"
        assert ask(base, "/search", text=TEXT).status_code == 200
        drop_server_database(url)
        dropped = True
        for path, params in (("/search", {"text": TEXT}), ("/products/1/similar", {})):
            body = assert_problem(ask(base, path, **params), 503, "the shop database cannot be reached")
            assert body["retry_after"] > 0
        down = ask(base, "/health")
        assert down.status_code == 503 and down.json()["database"] == "unreachable"
        assert int(down.headers["Retry-After"]) > 0
    finally:
        out, err = stop(server, signal.SIGINT)
        if not dropped:
            drop_server_database(url)
    assert "Traceback" not in out + err


@pytest.mark.parametrize("shop_url", ["sqlite"], indirect=True)
def test_listening_is_loopback_only_by_address_and_ports_are_checked(searchable, shop_url):
    assert loopback("127.0.0.1") and loopback("localhost") and loopback("::1") and loopback("127.0.0.2")
    for host in ("127.0.0.1.nip.io", "0.0.0.0", "::", "no-such-host.invalid", "", "127.0.0.1 "):
        assert not loopback(host), host
    _, env = searchable
    for arguments in (("--host", "127.0.0.1.nip.io"), ("--port", "99999"), ("--port", "0")):
        refused = run(["replicate-assets", "serve", *arguments], env, timeout=60)
        assert refused.returncode in (1, 2) and "Traceback" not in refused.stderr, refused.stderr
        assert "SEARCH_API_KEY" in refused.stderr or "is not a port" in refused.stderr


@pytest.mark.parametrize("shop_url", ["sqlite"], indirect=True)
def test_a_bounded_load_of_mixed_requests_has_no_5xx_and_pays_each_query_once(searchable, fresh_emulator, shop_url):
    """400 requests, 32 at a time: cached text, similar products, new texts (some beyond the cap of 20 a minute),
    bad input. Prints p50/p99 (BENCHMARKS.md keeps them); asserts what a shop relies on."""
    _, env = searchable
    fresh_emulator.latency = 0.2
    server, base, _ = start_serve({**env, "SEARCH_QUERIES_PER_MINUTE": "20"})
    try:
        assert ask(base, "/search", text=TEXT).status_code == 200  # a cached query from here on
        before = creates(fresh_emulator)
        new_texts = [f"product number {n % 30}" for n in range(120)]  # 30 distinct new queries, each asked 4 times
        plan = (
            [("/search", {"text": TEXT})] * 120
            + [(f"/products/{1 + n % 20}/similar", {"limit": "5"}) for n in range(100)]
            + [("/search", {"text": text}) for text in new_texts]
            + [("/search", {"text": "bag", "limit": "-1"}), ("/search", {"text": "\x00"})] * 30
        )

        def timed(item):
            started = time.perf_counter()
            answer = ask(base, item[0], **item[1])
            return answer, (time.perf_counter() - started) * 1000

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            done = list(pool.map(timed, plan))
        elapsed = time.monotonic() - began
        statuses = [a.status_code for a, _ in done]
        assert not [s for s in statuses if s >= 500], sorted(set(statuses))
        answered = {a.json()["query"]["text"] for a, _ in done if a.status_code == 200 and "text" in a.json()["query"]}
        paid_now = creates(fresh_emulator) - before
        assert paid_now == len(answered - {TEXT})  # each distinct new query answered was paid once
        assert paid_now <= 20 + elapsed / 3 + 1  # within the cap: 20 at once, then one every 3 s
        if elapsed < 25:  # 30 distinct queries could not all be paid for within the cap
            assert statuses.count(429) > 0
        times = sorted(ms for _, ms in done)
        p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
        print(f"\nload: {len(plan)} requests, 32 at a time, {elapsed:.1f} s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    finally:
        stop(server, signal.SIGINT)
