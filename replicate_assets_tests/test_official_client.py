"""The official `replicate` Python client, pointed at the emulator, as a witness that the emulator answers as
Replicate does: models.get, run on each CLIP model, predictions create/get/cancel/list, accounts.current. Where
the emulator drifts from the real API's documented shapes, the client's own validation fails here."""

import pytest
from conftest import TOKEN

from replicate_assets.replicate import DIMENSIONS, MODELS

replicate = pytest.importorskip("replicate", reason="the official client is a dev dependency (pip install -e '.[dev]')")


@pytest.fixture
def client(fresh_emulator):
    return replicate.Client(api_token=TOKEN, base_url=fresh_emulator.base_url.removesuffix("/v1"))


def reference(name: str) -> str:
    spec = MODELS[name]
    return f"{name}:{spec.version}" if spec.version else name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_get_and_run_each_clip_model(client, name, image_server):
    from replicate_assets.testing.sample_shop import png

    model = client.models.get(name)
    assert model.owner + "/" + model.name == name and model.latest_version is not None
    image_server.images["witness.png"] = png(4242)
    url = f"{image_server.base_url}/witness.png"
    if name == "andreasjansson/clip-features":
        output = client.run(reference(name), input={"inputs": f"{url}\na red shoe"})
        assert [item["input"] for item in output] == [url, "a red shoe"]
        assert all(len(item["embedding"]) == DIMENSIONS for item in output)
    else:
        by_image = client.run(reference(name), input={"image": url})
        by_text = client.run(reference(name), input={"text": "a red shoe"})
        assert len(by_image["embedding"]) == len(by_text["embedding"]) == DIMENSIONS


def test_predictions_create_get_cancel_list_and_the_account(client, fresh_emulator):
    fresh_emulator.latency = 5.0  # still running when canceled
    account = client.accounts.current()
    assert account.username and account.type in ("user", "organization")
    created = client.models.predictions.create(model="openai/clip", input={"text": "a blue bag"})
    assert created.id and created.status in ("starting", "processing")
    fetched = client.predictions.get(created.id)
    assert fetched.id == created.id and fetched.input == {"text": "a blue bag"}
    canceled = client.predictions.cancel(created.id)
    assert canceled.status == "canceled"
    fresh_emulator.latency = 0.0
    done = client.models.predictions.create(model="openai/clip", input={"text": "a green hat"})
    done.wait()
    assert done.status == "succeeded" and len(done.output["embedding"]) == DIMENSIONS
    listed = client.predictions.list()
    assert {created.id, done.id} <= {p.id for p in listed.results}
