"""A local stand-in for Replicate's HTTP API, for tests and the demo: a real HTTP server on loopback.

It speaks the endpoints of Replicate's API for the three CLIP models (create by model path or by version, get,
list, cancel, account, model and version), honours `Prefer: wait`, downloads each image URL as the real model
does, limits creates (429 with `retry_after`, `ratelimit-*` headers), removes predictions' data after the
retention, and answers with an embedding that is a deterministic function of the image bytes (`embedding_for`).
`Faults` injects what Replicate and the network in front of it do wrong.
"""

from collections.abc import Callable

from replicate_assets.testing.emulator.faults import Faults
from replicate_assets.testing.emulator.predictions import embedding_for
from replicate_assets.testing.emulator.server import Emulator

__all__ = ["Emulator", "Faults", "embedding_for", "serve"]


def serve(
    port: int,
    latency: float,
    creates_per_minute: float | None,
    token: str | None,
    retention: float = 3600.0,
    on_ready: Callable[[Emulator], None] | None = None,
    burst: int = 10,
) -> None:
    """Run the emulator in the foreground until interrupted."""
    emulator = Emulator(
        port=port,
        latency=latency,
        creates_per_minute=creates_per_minute,
        burst=burst,
        token=token,
        retention=retention,
        log_requests=False,
    )
    if on_ready:
        on_ready(emulator)
    try:
        emulator.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.server.server_close()
