"""Rate limits: a plain token bucket, and the create limiter that learns the limit an account is actually given.

Replicate allows 600 creates a minute, but an account with little credit gets far less (6 a minute, bursts of
one, was seen). `CreateLimiter` starts at the configured rate with bursts of one, learns from every 429 (its
`retry_after` says when the next token comes) and from `ratelimit-remaining` / `ratelimit-reset` headers where
they are sent, and speeds back up gradually. One limiter is shared by all threads of a run.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from replicate_assets.replicate.errors import Stopped

Clock = Callable[[], float]
EPSILON = 1e-9  # a token short by rounding is a token: waiting 1e-17 s would never end


class TokenBucket:
    """`per_second` tokens a second, at most `burst` saved up."""

    def __init__(self, per_second: float, burst: float, clock: Clock = time.monotonic):
        self.rate, self.capacity, self.clock = per_second, float(burst), clock
        self.tokens = float(burst)
        self.updated = clock()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take a token: return 0, or (taking nothing) the seconds until one is there."""
        with self.lock:
            self._refill()
            if self.tokens >= 1 - EPSILON:
                self.tokens = max(0.0, self.tokens - 1)
                return 0.0
            return (1 - self.tokens) / self.rate

    def remaining(self) -> int:
        with self.lock:
            self._refill()
            return max(0, math.floor(self.tokens))

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


class CreateLimiter:
    """Paces prediction creates for every thread of a run, at most `per_minute`, adapting to 429s.

    - It starts at a quarter of `per_minute`, with bursts of one, and doubles the rate after every `SLOW_STEP`
      accepted creates until the first 429 (a slow start: a throttled account is not flooded); bursts grow by one
      with each accepted create, up to one second's worth.
    - A 429 pauses every thread for its `retry_after`. When that wait is long (>= 2 s, a throttled account), the
      limit is computed from it: the last accepted create took the last token, and the next one comes after the
      time since then plus `retry_after`. A short wait halves the rate.
    - After a 429, every `HOLD` accepted creates in a row raise the rate by a quarter, back towards `per_minute`.
    - `ratelimit-remaining: 0` with `ratelimit-reset: S` pauses for S seconds (2 to 60) without a refusal.
    """

    HOLD = 10
    STEP_UP = 1.25
    SLOW_START = 4
    SLOW_STEP = 3

    def __init__(self, per_minute: float, stop: threading.Event | None = None, clock: Clock = time.monotonic):
        self.max_rate = per_minute / 60.0
        self.rate = self.max_rate / self.SLOW_START
        self.throttled_once = False
        self.burst = 1.0
        self.stop = stop or threading.Event()
        self.clock = clock
        self.lock = threading.Lock()
        self.tokens = 1.0
        self.updated = clock()
        self.paused_until = 0.0
        self.last_accepted: float | None = None
        self.streak = 0

    def acquire(self) -> None:
        """Block until a create may be sent; raises Stopped when the run is told to stop."""
        while True:
            if self.stop.is_set():
                raise Stopped("stopped before sending")
            wait_for = self.take()
            if not wait_for:
                return
            if self.stop.wait(min(wait_for, 1.0)):
                raise Stopped("stopped before sending")

    def take(self) -> float:
        """Take the right to send one create now: 0, or (taking nothing) the seconds to wait first."""
        with self.lock:
            now = self.clock()
            self._refill(now)
            if now >= self.paused_until and self.tokens >= 1 - EPSILON:
                self.tokens = max(0.0, self.tokens - 1)
                return 0.0
            return max(self.paused_until - now, (1 - self.tokens) / self.rate)

    def accepted(self, remaining: int | None = None, reset: float | None = None) -> None:
        """A create was accepted; `remaining` / `reset` are the ratelimit headers, where sent."""
        with self.lock:
            now = self.clock()
            self.last_accepted = now
            self.streak += 1
            self.burst = min(max(1.0, self.rate), self.burst + 1)
            if self.rate < self.max_rate:
                if not self.throttled_once and self.streak % self.SLOW_STEP == 0:
                    self.rate = min(self.max_rate, self.rate * 2)
                elif self.throttled_once and self.streak % self.HOLD == 0:
                    self.rate = min(self.max_rate, self.rate * self.STEP_UP)
            if remaining == 0 and reset and reset >= 2:  # a whole-second reset of 1 says too little: ignore it
                self.paused_until = max(self.paused_until, now + min(reset, 60.0))

    def throttled(self, retry_after: float) -> None:
        """A create was refused with 429: every thread waits `retry_after`, and the rate goes down."""
        with self.lock:
            now = self.clock()
            self.streak = 0
            self.throttled_once = True
            if now < self.paused_until:
                return  # another thread's 429 of the same burst: already accounted for
            self.paused_until = now + retry_after
            since = now - self.last_accepted if self.last_accepted is not None else 0.0
            if retry_after >= 2:
                learned = 1.0 / (since + retry_after)
                self.rate = max(min(self.rate / 2, learned), self.max_rate / 6000)
            else:
                self.rate = max(self.rate / 2, self.max_rate / 6000)
            self.burst = 1.0
            self.tokens = min(self.tokens, 1.0)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
