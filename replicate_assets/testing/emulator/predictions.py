"""The emulator's predictions: their documents, as Replicate renders them, and the model's work.

The embedding of an image is a deterministic function of its bytes (`embedding_for`): the same bytes give the
same 768 floats, so tests can check every stored vector; sample-shop images of one category come out near each
other, and near the words that name it (a stand-in for CLIP's semantics, see semantics.py).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

from replicate_assets.testing.semantics import image_embedding


def embedding_for(data: bytes) -> list[float]:
    """The emulator's embedding of an image's bytes: 768 floats, the same for the same bytes (see semantics.py)."""
    return image_embedding(data)


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    ready_at: float  # monotonic time the model finishes
    created: float = field(default_factory=lambda: dt.datetime.now(dt.UTC).timestamp())  # wall clock
    index: int = 0  # position in creation order, for the list's cursor
    status: str = "starting"
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    predict_time: float | None = None
    fault: str | None = None
    sparse: bool = False
    data_removed: bool = False
    logs: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def created_at(self) -> str:
        return iso(self.created)

    @property
    def running(self) -> bool:
        return self.status in ("starting", "processing")

    def document(self, base_url: str) -> dict[str, Any]:
        if self.sparse:
            return self._sparse_document(base_url)
        doc: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "output": self.output,
            "data_removed": self.data_removed,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "created_at": self.created_at,
            "urls": {
                "get": f"{base_url}/predictions/{self.id}",
                "cancel": f"{base_url}/predictions/{self.id}/cancel",
                "web": f"https://replicate.com/p/{self.id}",
            },
        }
        if self.started_at:
            doc["started_at"] = self.started_at
        if self.completed_at:
            doc["completed_at"] = self.completed_at
            doc["metrics"] = {"predict_time": self.predict_time, "total_time": self.predict_time}
        return doc

    def _sparse_document(self, base_url: str) -> dict[str, Any]:
        """An older, looser answer: no urls.web, no data_removed, null logs, nanosecond timestamps."""
        doc: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": None,
            "status": self.status,
            "created_at": self.created_at.replace("Z", "123Z"),
            "urls": {"get": f"{base_url}/predictions/{self.id}", "cancel": f"{base_url}/predictions/{self.id}/cancel"},
        }
        if not self.running:
            doc.update(
                output=self.output,
                error=self.error,
                completed_at=(self.completed_at or self.created_at).replace("Z", "987Z"),
                metrics={"predict_time": self.predict_time},
            )
        return doc
