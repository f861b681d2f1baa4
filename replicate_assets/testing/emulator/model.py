"""The CLIP models' work in the emulator: fetch each image as the real model does, embed it, fail as it fails."""

from __future__ import annotations

import base64
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from replicate_assets.replicate import DIMENSIONS
from replicate_assets.testing.emulator.predictions import Prediction, iso
from replicate_assets.testing.semantics import text_embedding

if TYPE_CHECKING:
    from replicate_assets.testing.emulator.server import Emulator

URL_LINE = "http://", "https://"
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # a larger download is refused, as a model with a memory budget would


class Model:
    """Runs a prediction whose time has come: its output, or the error its predictor gives."""

    def __init__(self, embed: Callable[[bytes], list[float]], predict_time: float, emulator: Emulator):
        self.embed, self.predict_time, self.emulator = embed, predict_time, emulator
        self.download = requests.Session()
        self.download_timeout, self.max_image_bytes = 10.0, MAX_IMAGE_BYTES

    def _fetch(self, url: str) -> bytes:
        """The image's bytes; fails as the model's download does, quoting the URL in requests' own forms (a
        refused connection, a time-out, an unknown host, a TLS error) or its own (an HTTP status, too large)."""
        if url.startswith("data:"):
            return base64.b64decode(url.partition(",")[2])
        with self.download.get(url, timeout=self.download_timeout, stream=True) as response:
            if response.status_code != 200:
                raise ValueError(f"Failed to download image from {url}: HTTP {response.status_code}")
            content = response.raw.read(self.max_image_bytes + 1, decode_content=True)
        if len(content) > self.max_image_bytes:
            raise ValueError(f"Image too large: {url} is over {self.max_image_bytes} bytes")
        if not content:
            raise ValueError(f"Failed to download image from {url}: empty body")
        return content

    def _vector(self, item: str, is_image: bool) -> array:
        data = self._fetch(item) if is_image else item.encode()
        return array("d", self.embed(data) if is_image else self.embed_text(item))  # 6 KB, not 25 as a list

    def embed_text(self, text: str) -> list[float]:
        return text_embedding(text)

    def run(self, prediction: Prediction) -> None:
        """Compute the output of a prediction whose time has come (once)."""
        prediction.completed_at = iso(time.time())
        prediction.predict_time = self.emulator.predict_time
        if prediction.fault in ("failed", "canceled", "aborted"):
            prediction.status = prediction.fault
            if prediction.fault == "failed":
                prediction.error = "CUDA error: an illegal memory access was encountered (emulated)"
            return
        try:
            if prediction.model == "andreasjansson/clip-features":
                self._run_batch(prediction)
            else:
                image = prediction.input.get("image")
                item = image if image else prediction.input["text"]
                prediction.output = {"embedding": self._vector(item, bool(image))}
            prediction.status = "succeeded"
        except (ValueError, requests.RequestException) as err:
            prediction.status, prediction.error = "failed", str(err)
            if self.emulator.faults_for(prediction.model, 0).vague_errors:
                prediction.error, prediction.logs = "Prediction failed.", ""
        if prediction.fault == "malformed" and prediction.status == "succeeded":
            prediction.output = self._malformed(prediction.output)

    def _run_batch(self, prediction: Prediction) -> None:
        """clip-features as its predictor behaves: an image it cannot load is logged ("Failed to load URL: why")
        and then fails the whole prediction with a KeyError naming the URL; when no image loaded at all, with a
        NameError (a typo in the predictor) that names none."""
        lines = [line.strip() for line in prediction.input["inputs"].strip().splitlines() if line.strip()]
        vectors, logs, images, failed = {}, [], 0, []
        for line in dict.fromkeys(lines):
            if not line.startswith(URL_LINE):
                vectors[line] = self._vector(line, False)
                continue
            logs.append(f"Downloading {line}")
            try:
                vectors[line] = self._vector(line, True)
                images += 1
            except (ValueError, requests.RequestException) as err:
                logs.append(f"Failed to load {line}: cannot identify image file ({err})")
                failed.append(line)
        prediction.logs = "\n".join(logs) + "\n"
        if failed:
            no_image = images == 0
            raise ValueError("name 'image_outputs' is not defined" if no_image else repr(failed[0]))
        prediction.output = [{"input": line, "embedding": vectors[line]} for line in dict.fromkeys(lines)]

    def _malformed(self, output: Any) -> Any:
        with self.emulator.lock:
            kind = self.emulator.random.randrange(4)
        vector = [0.1] * DIMENSIONS
        bad = [vector[:-1], [float("nan")] + vector[1:], ["0.1"] * DIMENSIONS, None][kind]
        if isinstance(output, list):
            return [{**item, "embedding": bad} for item in output]
        return {"embedding": bad}
