"""The emulator speaks Replicate's HTTP API: plain requests against the real local server."""

import time

import numpy as np
import pytest
import requests
from conftest import TOKEN

from replicate_assets.replicate import MODELS
from replicate_assets.testing.emulator import Emulator, embedding_for
from replicate_assets.testing.sample_shop import png
from replicate_assets.testing.semantics import text_embedding

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(image_server):
    image_server.images["emu/a.png"] = png(1)
    image_server.images["emu/b.png"] = png(2)
    return f"{image_server.base_url}/emu/a.png", f"{image_server.base_url}/emu/b.png"


def test_account_and_model(fresh_emulator):
    account = requests.get(f"{fresh_emulator.base_url}/account", headers=AUTH, timeout=5)
    assert account.status_code == 200 and account.json()["username"] == "emulator"
    model = requests.get(f"{fresh_emulator.base_url}/models/andreasjansson/clip-features", headers=AUTH, timeout=5)
    assert model.json()["latest_version"]["id"] == MODELS["andreasjansson/clip-features"].version
    missing = requests.get(f"{fresh_emulator.base_url}/models/nobody/nothing", headers=AUTH, timeout=5)
    assert missing.status_code == 404 and missing.json()["status"] == 404


def test_bad_token_is_401_problem_json(fresh_emulator):
    response = requests.get(f"{fresh_emulator.base_url}/account", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Unauthenticated"
    older_scheme = requests.get(
        f"{fresh_emulator.base_url}/account", headers={"Authorization": f"Token {TOKEN}"}, timeout=5
    )
    assert older_scheme.status_code == 200


def test_sync_create_returns_the_embedding_of_the_image_bytes(fresh_emulator, served):
    response = requests.post(
        f"{fresh_emulator.base_url}/models/openai/clip/predictions",
        json={"input": {"image": served[0]}},
        headers={**AUTH, "Prefer": "wait"},
        timeout=10,
    )
    assert response.status_code == 201
    prediction = response.json()
    assert prediction["status"] == "succeeded"
    assert prediction["output"]["embedding"] == embedding_for(png(1))
    assert len(prediction["output"]["embedding"]) == 768
    assert prediction["metrics"]["predict_time"] > 0
    assert prediction["urls"]["get"].endswith(prediction["id"])


def test_the_stand_in_semantics_put_a_category_and_its_words_together(fresh_emulator, image_server):
    """Not CLIP: images of one category are near each other and near the category's words, through the API."""
    images = {
        "bag1": png(11, category="red leather bag"),
        "bag2": png(12, category="red leather bag"),
        "shoe": png(13, category="blue running shoe"),
    }
    for name, data in images.items():
        image_server.images[f"sem/{name}.png"] = data

    def embed(field: str, value: str) -> np.ndarray:
        answer = requests.post(
            f"{fresh_emulator.base_url}/models/openai/clip/predictions",
            json={"input": {field: value}},
            headers={**AUTH, "Prefer": "wait"},
            timeout=10,
        ).json()
        vector = np.asarray(answer["output"]["embedding"])
        return vector / np.linalg.norm(vector)

    bag1, bag2, shoe = (embed("image", f"{image_server.base_url}/sem/{n}.png") for n in images)
    words = embed("text", "red leather bag")
    assert bag1 @ bag2 > 0.6 > bag1 @ shoe
    assert words @ bag1 > 0.6 > words @ shoe
    assert np.allclose(
        words, np.asarray(text_embedding("red leather bag")) / np.linalg.norm(text_embedding("red leather bag"))
    )


def test_slow_prediction_is_incomplete_then_polled(fresh_emulator, served):
    fresh_emulator.latency = 1.5
    response = requests.post(
        f"{fresh_emulator.base_url}/models/openai/clip/predictions",
        json={"input": {"image": served[0]}},
        headers={**AUTH, "Prefer": "wait=1"},
        timeout=10,
    )
    prediction = response.json()
    assert prediction["status"] in ("starting", "processing")
    assert "metrics" not in prediction and prediction["output"] is None
    time.sleep(0.7)
    polled = requests.get(prediction["urls"]["get"], headers=AUTH, timeout=5).json()
    assert polled["status"] == "succeeded"
    assert polled["output"]["embedding"] == embedding_for(png(1))


def test_inputs_and_outputs_are_removed_after_the_retention_as_on_replicate(fresh_emulator, served):
    fresh_emulator.retention = 0.5

    def create(url: str) -> dict:
        return requests.post(
            f"{fresh_emulator.base_url}/models/openai/clip/predictions",
            json={"input": {"image": url}},
            headers={**AUTH, "Prefer": "wait"},
            timeout=10,
        ).json()

    first = create(served[0])
    assert first["output"]["embedding"] == embedding_for(png(1)) and first["data_removed"] is False
    time.sleep(0.6)
    second = create(served[1])
    # The next create released the old output, though nobody asked for it again: memory stays bounded.
    assert fresh_emulator.predictions[first["id"]].output is None
    removed = requests.get(first["urls"]["get"], headers=AUTH, timeout=5).json()
    assert removed["status"] == "succeeded" and removed["data_removed"] is True
    assert removed["output"] is None and removed["input"] == {}
    assert removed["metrics"]["predict_time"] > 0
    kept = requests.get(second["urls"]["get"], headers=AUTH, timeout=5).json()
    assert kept["output"]["embedding"] == embedding_for(png(2)) and kept["data_removed"] is False


def test_cancel_stops_a_running_prediction(fresh_emulator, served):
    fresh_emulator.latency = 5
    prediction = requests.post(
        f"{fresh_emulator.base_url}/models/openai/clip/predictions",
        json={"input": {"image": served[0]}},
        headers=AUTH,
        timeout=5,
    ).json()
    canceled = requests.post(prediction["urls"]["cancel"], headers=AUTH, timeout=5).json()
    assert canceled["status"] == "canceled"


def test_dead_image_url_fails_the_prediction(fresh_emulator, image_server):
    response = requests.post(
        f"{fresh_emulator.base_url}/models/openai/clip/predictions",
        json={"input": {"image": f"{image_server.base_url}/nothing.png"}},
        headers={**AUTH, "Prefer": "wait"},
        timeout=10,
    )
    prediction = response.json()
    assert prediction["status"] == "failed"
    assert "404" in prediction["error"]


def test_version_endpoint_and_its_errors(fresh_emulator, served):
    version = MODELS["krthr/clip-embeddings"].version
    ok = requests.post(
        f"{fresh_emulator.base_url}/predictions",
        headers={**AUTH, "Prefer": "wait"},
        timeout=10,
        json={"version": f"krthr/clip-embeddings:{version}", "input": {"image": served[1]}},
    )
    assert ok.status_code == 201 and ok.json()["output"]["embedding"] == embedding_for(png(2))
    bad_version = requests.post(
        f"{fresh_emulator.base_url}/predictions",
        headers=AUTH,
        timeout=5,
        json={"version": "0" * 64, "input": {"image": served[1]}},
    )
    assert bad_version.status_code == 422 and bad_version.json()["title"] == "Invalid version or not permitted"
    extra_field = requests.post(
        f"{fresh_emulator.base_url}/predictions",
        headers=AUTH,
        timeout=5,
        json={"version": version, "input": {"image": served[1]}, "extra": 1},
    )
    assert extra_field.status_code == 422 and extra_field.json()["title"] == "Input validation failed"
    no_input = requests.post(
        f"{fresh_emulator.base_url}/models/openai/clip/predictions", headers=AUTH, timeout=5, json={"input": {}}
    )
    assert no_input.status_code == 422 and no_input.json()["invalid_fields"]
    community_by_path = requests.post(
        f"{fresh_emulator.base_url}/models/krthr/clip-embeddings/predictions",
        headers=AUTH,
        timeout=5,
        json={"input": {"image": served[1]}},
    )
    assert community_by_path.status_code == 404


def test_clip_features_batches_and_fails_whole_on_one_dead_url(fresh_emulator, served, image_server):
    version = MODELS["andreasjansson/clip-features"].version
    body = {"version": version, "input": {"inputs": f"{served[0]}\na red shoe\n{served[1]}\n{served[0]}"}}
    prediction = requests.post(
        f"{fresh_emulator.base_url}/predictions", json=body, headers={**AUTH, "Prefer": "wait"}, timeout=10
    ).json()
    assert prediction["status"] == "succeeded"
    by_input = {item["input"]: item["embedding"] for item in prediction["output"]}
    assert by_input == {
        served[0]: embedding_for(png(1)),
        "a red shoe": text_embedding("a red shoe"),  # a text: near red things and shoes (the stand-in semantics)
        served[1]: embedding_for(png(2)),
    }
    body["input"]["inputs"] += f"\n{image_server.base_url}/dead.png"
    failed = requests.post(
        f"{fresh_emulator.base_url}/predictions", json=body, headers={**AUTH, "Prefer": "wait"}, timeout=10
    ).json()
    assert failed["status"] == "failed" and "dead.png" in failed["error"]


def test_create_rate_limit_answers_429_with_retry_after(served):
    with Emulator(creates_per_minute=60, burst=2) as limited:
        answers = [
            requests.post(
                f"{limited.base_url}/models/openai/clip/predictions",
                json={"input": {"image": served[0]}},
                headers=AUTH,
                timeout=5,
            )
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [201, 201, 429]
        throttled = answers[2].json()
        assert throttled["retry_after"] == 1 and "throttled" in throttled["detail"]
        # Other endpoints are not limited by the create limit.
        assert requests.get(f"{limited.base_url}/account", headers=AUTH, timeout=5).status_code == 200


def test_request_log_counts_creates_per_input(fresh_emulator, served):
    for _ in range(2):
        requests.post(
            f"{fresh_emulator.base_url}/models/openai/clip/predictions",
            json={"input": {"image": served[0]}},
            headers=AUTH,
            timeout=5,
        )
    assert fresh_emulator.creates_per_input() == {served[0]: 2}


def test_the_list_is_newest_first_paged_bounded_and_loses_data_after_the_retention(fresh_emulator, served):
    def create(text: str) -> dict:
        return requests.post(
            f"{fresh_emulator.base_url}/models/openai/clip/predictions",
            json={"input": {"text": text}},
            headers={**AUTH, "Prefer": "wait"},
            timeout=10,
        ).json()

    made = [create(f"query {n}") for n in range(130)]
    first = requests.get(f"{fresh_emulator.base_url}/predictions", headers=AUTH, timeout=5).json()
    assert [p["id"] for p in first["results"]] == [p["id"] for p in reversed(made)][:100]
    assert first["results"][0]["input"] == {"text": "query 129"} and first["results"][0]["output"]["embedding"]
    second = requests.get(first["next"], headers=AUTH, timeout=5).json()
    assert [p["id"] for p in second["results"]] == [p["id"] for p in reversed(made)][100:]
    assert second["next"] is None
    # created_after / created_before bound the list; the next link keeps the bound
    after = made[119]["created_at"]
    bounded = requests.get(
        f"{fresh_emulator.base_url}/predictions", params={"created_after": after}, headers=AUTH, timeout=5
    ).json()
    assert [p["id"] for p in bounded["results"]] == [p["id"] for p in reversed(made[120:])]
    before = requests.get(
        f"{fresh_emulator.base_url}/predictions",
        params={"created_before": made[5]["created_at"]},
        headers=AUTH,
        timeout=5,
    ).json()
    assert [p["id"] for p in before["results"]] == [p["id"] for p in reversed(made[:5])]
    # after the retention, listed predictions keep their id and status but lose input and output
    fresh_emulator.retention = 0.0
    removed = requests.get(f"{fresh_emulator.base_url}/predictions", headers=AUTH, timeout=5).json()["results"][0]
    assert removed["status"] == "succeeded" and removed["data_removed"] is True
    assert removed["input"] == {} and removed["output"] is None


def test_rate_limit_headers_say_what_is_left(served):
    with Emulator(creates_per_minute=6, burst=1) as throttled:
        accepted = requests.post(
            f"{throttled.base_url}/models/openai/clip/predictions",
            json={"input": {"text": "a"}},
            headers=AUTH,
            timeout=5,
        )
        refused = requests.post(
            f"{throttled.base_url}/models/openai/clip/predictions",
            json={"input": {"text": "b"}},
            headers=AUTH,
            timeout=5,
        )
    assert accepted.status_code == 201 and accepted.headers["ratelimit-remaining"] == "0"
    assert accepted.headers["ratelimit-reset"] == "10"  # 6 a minute: the bucket is full again in 10 s
    assert refused.status_code == 429 and refused.json()["retry_after"] == 10


def test_versions_are_checked(fresh_emulator):
    version = MODELS["krthr/clip-embeddings"].version
    base = f"{fresh_emulator.base_url}/models/krthr/clip-embeddings/versions"
    assert requests.get(f"{base}/{version}", headers=AUTH, timeout=5).json()["id"] == version
    assert requests.get(f"{base}/{'0' * 64}", headers=AUTH, timeout=5).status_code == 404
