"""The Replicate resource against the emulator: the normal path and the obvious errors, over real HTTP."""

import math

import pytest
from conftest import TOKEN

from replicate_assets.replicate import ReplicateClient, ReplicateConfigError, model_spec
from replicate_assets.testing.emulator import Emulator, embedding_for
from replicate_assets.testing.sample_shop import png


@pytest.fixture
def urls(image_server):
    for n in range(12):
        image_server.images[f"client/{n}.png"] = png(1000 + n)
    return [f"{image_server.base_url}/client/{n}.png" for n in range(12)]


def client_for(emulator: Emulator, **fields) -> ReplicateClient:
    fields.setdefault("max_predictions_per_minute", 60_000)
    return ReplicateClient(TOKEN, base_url=emulator.base_url, **fields)


def test_embeds_each_url_once_with_the_right_vector(fresh_emulator, urls):
    outcomes = {o.url: o for o in client_for(fresh_emulator).embed_images(urls)}
    assert outcomes.keys() == set(urls)
    for n, url in enumerate(urls):
        assert outcomes[url].embedding == embedding_for(png(1000 + n))
        assert outcomes[url].prediction_id and outcomes[url].predict_time > 0
    assert fresh_emulator.creates_per_input() == dict.fromkeys(urls, 1)


def test_polls_predictions_slower_than_the_sync_wait(fresh_emulator, urls):
    fresh_emulator.latency = 1.6
    client = client_for(fresh_emulator, sync_wait_seconds=1)
    outcomes = list(client.embed_images(urls[:3]))
    assert all(o.ok for o in outcomes)
    assert client.stats.polls >= 3
    assert client.stats.creates == 3


def test_an_output_removed_before_it_was_read_fails_the_image_and_says_why(fresh_emulator, urls):
    fresh_emulator.latency, fresh_emulator.retention = 1.2, 0.0  # read after Replicate's hour, in effect
    [outcome] = client_for(fresh_emulator, sync_wait_seconds=1).embed_images(urls[:1])
    assert not outcome.ok and outcome.embedding is None
    assert "its output was removed (data_removed)" in outcome.error


def test_dead_url_fails_only_that_image(fresh_emulator, urls, image_server):
    dead = f"{image_server.base_url}/client/dead.png"
    outcomes = {o.url: o for o in client_for(fresh_emulator).embed_images([*urls[:3], dead])}
    assert all(outcomes[u].ok for u in urls[:3])
    assert not outcomes[dead].ok and "404" in outcomes[dead].error and not outcomes[dead].left_pending


def test_invalid_input_fails_the_image_with_replicates_detail(fresh_emulator):
    [outcome] = client_for(fresh_emulator).embed_images(["not-a-url"])
    assert not outcome.ok and "422" in outcome.error and "uri" in outcome.error


def test_bad_token_raises_a_config_error_without_the_token(fresh_emulator, urls):
    client = ReplicateClient("r8_bad_secret", base_url=fresh_emulator.base_url)
    with pytest.raises(ReplicateConfigError) as raised:
        list(client.embed_images(urls[:2]))
    assert "REPLICATE_API_TOKEN" in str(raised.value) and "r8_bad_secret" not in str(raised.value)


def test_missing_token_and_unknown_model_say_what_to_set(fresh_emulator):
    with pytest.raises(ReplicateConfigError, match="REPLICATE_API_TOKEN is not set"):
        ReplicateClient(None, base_url=fresh_emulator.base_url)
    with pytest.raises(ReplicateConfigError, match="REPLICATE_MODEL='stability-ai/sdxl' is not a supported"):
        model_spec("stability-ai/sdxl")


def test_token_is_never_sent_over_plain_http_to_a_remote_host():
    with pytest.raises(ReplicateConfigError, match="plain http"):
        ReplicateClient(TOKEN, base_url="http://api.example.com/v1")


def test_test_connection_returns_account_and_model(fresh_emulator):
    found = client_for(fresh_emulator, model="krthr/clip-embeddings").test_connection()
    assert found["account"]["username"] == "emulator"
    assert found["model"]["name"] == "clip-embeddings"


@pytest.mark.parametrize("model", ["krthr/clip-embeddings", "andreasjansson/clip-features"])
def test_version_models(fresh_emulator, urls, model):
    client = client_for(fresh_emulator, model=model, batch_size=5)
    outcomes = {o.url: o for o in client.embed_images(urls)}
    assert {u: o.embedding for u, o in outcomes.items()} == {
        u: embedding_for(png(1000 + n)) for n, u in enumerate(urls)
    }
    expected_creates = math.ceil(len(urls) / 5) if model.endswith("features") else len(urls)
    assert len(fresh_emulator.creates()) == expected_creates
    assert sum(o.predict_time for o in outcomes.values()) == pytest.approx(0.0152 * expected_creates)


def test_rate_limiter_keeps_creates_under_the_limit(urls):
    with Emulator(token=TOKEN, creates_per_minute=120, burst=2) as limited:
        client = ReplicateClient(TOKEN, base_url=limited.base_url, max_predictions_per_minute=120)
        outcomes = list(client.embed_images(urls[:6]))
        assert all(o.ok for o in outcomes)
        assert client.stats.throttled <= 1  # the client paces itself; a 429 is waited out, not a failure


def test_a_batch_failing_without_naming_the_url_is_halved_until_the_dead_one_stands_alone(
    fresh_emulator, urls, image_server
):
    from replicate_assets.testing.emulator import Faults

    fresh_emulator.set_faults(Faults(vague_errors=True))
    dead = f"{image_server.base_url}/client/dead.png"
    batch = [*urls[:7], dead, *urls[7:]]
    client = client_for(fresh_emulator, model="andreasjansson/clip-features", batch_size=16)
    outcomes = {o.url: o for o in client.embed_images(batch)}
    assert all(outcomes[u].ok for u in urls)
    assert outcomes[dead].error == "Prediction failed."
    # 13 inputs: the failed batch, then two halves per level down to the dead one: 1 + 2 * ceil(log2 13) = 9.
    assert len(fresh_emulator.creates()) <= 9
    assert sum(o.predict_time for o in outcomes.values()) == pytest.approx(0.0152 * len(fresh_emulator.creates()))
