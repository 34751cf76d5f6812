"""The retry schedule of watches and log streams: exponential, full jitter, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from multiarch.retry_after import retry_after_s
from multiarch.runners.kubernetes.backoff import Backoff


def test_the_ceiling_doubles_from_half_a_second_to_thirty():
    backoff = Backoff(draw=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_full_jitter_draws_between_zero_and_the_ceiling():
    draws = iter([0.0, 0.5, 0.25])
    backoff = Backoff(draw=lambda: next(draws))
    assert [backoff.next_delay() for _ in range(3)] == [0.0, 0.5, 0.5]


def test_reset_after_a_request_that_worked():
    backoff = Backoff(draw=lambda: 1.0)
    backoff.next_delay(), backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_retry_after_is_a_floor_and_is_bounded():
    backoff = Backoff(draw=lambda: 0.0)
    assert backoff.next_delay(retry_after_s=7) == 7
    assert backoff.next_delay(retry_after_s=86400) == 300


def test_retry_after_header_in_seconds_or_as_a_date():
    assert retry_after_s({"Retry-After": "5"}) == 5.0
    assert retry_after_s({"retry-after": " 12 "}) == 12.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= (retry_after_s({"Retry-After": later}) or 0) <= 60
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({}) is None and retry_after_s(None) is None
