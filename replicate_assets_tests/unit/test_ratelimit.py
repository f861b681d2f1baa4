"""The create limiter against an account's token bucket, on a simulated clock: how many creates are refused.

Replicate gives 600 creates a minute, but far less to an account with little credit (6 a minute, bursts of one,
was seen). The limiter must learn the limit it is given from 429s (and `ratelimit-*` headers where sent).
"""

import math

import pytest

from replicate_assets.replicate.ratelimit import CreateLimiter, TokenBucket


def simulate(account_per_minute: float, burst: int, creates: int, headers: bool) -> tuple[int, int, float]:
    """Send `creates` accepted creates as fast as the limiter allows; returns (accepted, refused, seconds)."""
    now = [0.0]
    limiter = CreateLimiter(600, clock=lambda: now[0])
    account = TokenBucket(account_per_minute / 60, burst, clock=lambda: now[0])
    accepted = refused = 0
    while accepted < creates:
        wait = limiter.take()
        if wait:
            now[0] += wait
            continue
        short = account.take()
        if short:
            refused += 1
            limiter.throttled(max(1, math.ceil(short)))  # Replicate's retry_after is whole seconds
        else:
            accepted += 1
            remaining = account.remaining()
            reset = math.ceil((account.capacity - remaining) / account.rate) if remaining < burst else 0
            limiter.accepted(remaining, reset) if headers else limiter.accepted()
        now[0] += 0.005  # the answer's round trip
    return accepted, refused, now[0]


@pytest.mark.parametrize("headers", [False, True], ids=["429s only", "with ratelimit headers"])
@pytest.mark.parametrize(
    "per_minute, burst, creates",
    [(6, 1, 19), (6, 1, 100), (60, 1, 200), (600, 10, 2000), (600, 1, 500)],
    ids=["low credit, 19", "low credit, 100", "60/min", "600/min", "600/min, no burst"],
)
def test_refused_creates_stay_under_a_quarter(per_minute, burst, creates, headers):
    accepted, refused, seconds = simulate(per_minute, burst, creates, headers)
    assert refused <= accepted / 4, f"{refused} of {accepted} creates refused"
    if per_minute == 600:  # the full limit is used: the ceiling benchmark needs >= 0.95 of it
        assert accepted / seconds >= (0.95 if burst > 1 else 0.9) * per_minute / 60


def test_a_429_pauses_every_thread_for_its_retry_after():
    now = [100.0]
    limiter = CreateLimiter(600, clock=lambda: now[0])
    assert limiter.take() == 0
    limiter.throttled(7)
    assert limiter.take() == pytest.approx(7, abs=0.01)
    now[0] += 7
    assert limiter.take() == 0
