"""Reading Replicate's answers: output shapes, vectors, failures of clip-features batches, timestamps."""

import datetime as dt

import pytest

from replicate_assets.replicate import MODELS, Prediction, ReplicateConfigError, model_spec, vector_problem
from replicate_assets.replicate.models import load_failures, parse_timestamp, read_output

FEATURES = MODELS["andreasjansson/clip-features"]
CLIP = MODELS["openai/clip"]
VECTOR = [0.25] * 768


@pytest.mark.parametrize(
    "vector, problem",
    [
        ([0.1] * 768, None),
        ([0.1] * 767, "expected 768 values, got 767"),
        ([0.0] * 768, "all zeros"),
        ([float("nan")] + [0.1] * 767, "NaN"),
        (["x"] * 768, "not numbers"),
        ({"embedding": []}, "expected a list"),
    ],
)
def test_vector_problem(vector, problem):
    found = vector_problem(vector)
    assert (found is None) if problem is None else (problem in found)


def test_a_single_image_output_is_read_and_a_batch_is_mapped_by_input():
    [one] = read_output(Prediction({"status": "succeeded", "output": {"embedding": VECTOR}}), ["u"], CLIP)
    assert one.ok and one.embedding == VECTOR
    batch = Prediction(
        {"status": "succeeded", "output": [{"input": "b", "embedding": VECTOR}, {"input": "a", "embedding": [1.0]}]}
    )
    a, b, c = read_output(batch, ["a", "b", "c"], FEATURES)
    assert not a.ok and "expected 768 values" in a.error
    assert b.ok and not c.ok and "got NoneType" in c.error


def test_an_output_removed_by_replicate_says_so():
    [gone] = read_output(Prediction({"status": "succeeded", "output": None, "data_removed": True}), ["u"], CLIP)
    assert gone.error == "malformed output: its output was removed (data_removed)"


def test_clip_features_failures_name_the_images_it_could_not_load():
    logs = "Downloading http://s/a.png\nFailed to load http://s/a.png: cannot identify image file\nDownloading http://s/b.png\n"
    prediction = Prediction({"id": "p1", "status": "failed", "error": "'http://s/a.png'", "logs": logs})
    dead = load_failures(prediction, ["http://s/a.png", "http://s/b.png", "http://s/a.png.bak"])
    assert list(dead) == ["http://s/a.png"]
    assert dead["http://s/a.png"] == (
        "the model could not load the image http://s/a.png: cannot identify image file (model error: 'http://s/a.png')"
    )
    nothing = Prediction({"id": "p2", "status": "failed", "error": "name 'image_outputs' is not defined", "logs": ""})
    assert load_failures(nothing, ["http://s/a.png"]) == {}  # it names no image: the batch is halved instead


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-01-15T10:30:45.36078514Z", dt.datetime(2025, 1, 15, 10, 30, 45, 360785, tzinfo=dt.UTC)),
        ("2025-01-15T10:30:45.123Z", dt.datetime(2025, 1, 15, 10, 30, 45, 123000, tzinfo=dt.UTC)),
        ("2025-01-15T10:30:45Z", dt.datetime(2025, 1, 15, 10, 30, 45, tzinfo=dt.UTC)),
        ("2025-01-15T12:30:45+02:00", dt.datetime(2025, 1, 15, 10, 30, 45, tzinfo=dt.UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_replicate_timestamps_of_3_to_9_digits(text, expected):
    assert parse_timestamp(text) == expected


def test_models_and_versions():
    assert model_spec("openai/clip").reference == "openai/clip"
    assert model_spec("krthr/clip-embeddings:" + "a" * 64).version == "a" * 64
    with pytest.raises(ReplicateConfigError, match="REPLICATE_MODEL='stability-ai/sdxl' is not a supported"):
        model_spec("stability-ai/sdxl")
    with pytest.raises(ReplicateConfigError, match="a version is 64 hexadecimal characters"):
        model_spec("krthr/clip-embeddings:latest")
    listed = Prediction({"model": "krthr/clip-embeddings", "version": MODELS["krthr/clip-embeddings"].version})
    assert MODELS["krthr/clip-embeddings"].made(listed) and not CLIP.made(listed)
    assert FEATURES.inputs_of({"inputs": "http://a\n\ntext\n"}) == ["http://a", "text"]
