"""Bounded, jittered backoff shared by the synchronous hook and the trigger.

The HTTP provider never retries 429, no official provider honours ``Retry-After``, and some poll loops
have no bound at all; DexCare reports are slow and the API is rate limited, so every wait here is bounded in
attempts *and* in total time, and a server hint always wins over our own guess.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from dexcare.exceptions import DexCareError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try; ``max_total_seconds`` caps the time spent sleeping and trying."""

    max_attempts: int = 5
    max_total_seconds: float = 300.0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}.")
        if self.max_total_seconds <= 0:
            raise ValueError(f"max_total_seconds must be positive, got {self.max_total_seconds}.")
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError("Need 0 <= initial_delay <= max_delay.")

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based).

        Full jitter over an exponential ceiling spreads many clients apart; a ``Retry-After`` hint is a
        floor, because waiting less than DexCare asked only earns another 429.
        """
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** max(failures - 1, 0))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` is either delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max((when - now).total_seconds(), 0.0)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DexCareError) and exc.retryable


def call_with_retries(
    func: Callable[[], T],
    policy: RetryPolicy,
    *,
    describe: str,
    log_retry: Callable[[str], None],
    sleep: Callable[[float], None] = tenacity.nap.sleep,
) -> T:
    """Run ``func`` until it succeeds, fails for good, or the policy's attempts or time run out."""

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return policy.backoff(state.attempt_number, getattr(exc, "retry_after", None))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep_for = state.next_action.sleep if state.next_action else 0.0
        log_retry(
            f"{describe}: attempt {state.attempt_number} of {policy.max_attempts} failed "
            f"({type(exc).__name__}: {exc}); retrying in {sleep_for:.1f}s"
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts)
        | tenacity.stop_before_delay(policy.max_total_seconds),
        wait=wait,
        retry=tenacity.retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    return retrying(func)
