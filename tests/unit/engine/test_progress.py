"""Tests of progress tracking: counts, window rate, ETA, throttled logging and duration format."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from parallel_batch.engine.progress import (
    RATE_WINDOW_SECONDS,
    ProgressSnapshot,
    ProgressTracker,
    format_duration,
)

LOGGER_NAME = "tests.progress"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def _tracker(
    clock: FakeClock, total: int | None = None, *, label: str = "", log_interval: float = 10.0
) -> ProgressTracker:
    return ProgressTracker(
        total,
        label=label,
        log_interval=log_interval,
        logger=logging.getLogger(LOGGER_NAME),
        clock=clock,
    )


def test_that_a_snapshot_reports_done_percent_rate_and_eta() -> None:
    """Test that after steady progress the snapshot has the exact count, percent, rate and ETA."""
    clock = FakeClock()
    tracker = _tracker(clock, total=1000)
    for _ in range(10):
        clock.tick(1.0)
        snap = tracker.advance(20)
    assert snap == ProgressSnapshot(
        done=200,
        total=1000,
        elapsed_seconds=10.0,
        rate_per_second=20.0,
        eta_seconds=40.0,
        percent=20.0,
    )
    assert snap.overall_rate_per_second == 20.0
    assert tracker.done == 200


def test_that_a_slow_start_does_not_distort_the_rate_and_eta() -> None:
    """Test that the rate follows the recent window while the overall rate keeps the slow start."""
    clock = FakeClock()
    tracker = _tracker(clock, total=200_000)
    for _ in range(60):  # a slow first minute: 10 rows/s
        clock.tick(1.0)
        tracker.advance(10)
    for _ in range(60):  # then 1000 rows/s
        clock.tick(1.0)
        snap = tracker.advance(1000)
    assert snap.done == 60_600
    assert snap.rate_per_second == pytest.approx(1000.0)
    assert snap.eta_seconds == pytest.approx((200_000 - 60_600) / 1000.0)
    assert snap.overall_rate_per_second == pytest.approx(60_600 / 120)


def test_that_the_rate_window_covers_at_least_the_window_length() -> None:
    """Test that a burst inside the last window is averaged over the whole window, not one sample."""
    clock = FakeClock()
    tracker = _tracker(clock)
    clock.tick(100.0)
    tracker.advance(0)
    clock.tick(RATE_WINDOW_SECONDS)
    snap = tracker.advance(3000)
    assert snap.rate_per_second == pytest.approx(3000 / RATE_WINDOW_SECONDS)


def test_that_a_stall_shows_as_zero_rate_and_unknown_eta() -> None:
    """Test that with no progress for longer than the window the rate is 0 and the ETA unknown."""
    clock = FakeClock()
    tracker = _tracker(clock, total=100)
    clock.tick(1.0)
    tracker.advance(50)
    clock.tick(RATE_WINDOW_SECONDS * 2)
    snap = tracker.snapshot()
    assert (snap.done, snap.rate_per_second, snap.eta_seconds, snap.percent) == (
        50,
        0.0,
        None,
        50.0,
    )


def test_that_percent_and_eta_are_none_without_a_total() -> None:
    """Test that an unknown total gives no percent and no ETA, but still a rate."""
    clock = FakeClock()
    tracker = _tracker(clock)
    clock.tick(2.0)
    snap = tracker.advance(10)
    assert (snap.total, snap.percent, snap.eta_seconds, snap.rate_per_second) == (
        None,
        None,
        None,
        5.0,
    )


def test_that_a_fresh_tracker_has_no_rate_and_no_eta() -> None:
    """Test that before any time has passed the rate is 0 and the ETA unknown (no division by zero)."""
    clock = FakeClock()
    snap = _tracker(clock, total=10).advance(3)
    assert (snap.rate_per_second, snap.eta_seconds, snap.overall_rate_per_second) == (
        0.0,
        None,
        0.0,
    )


def test_that_a_finished_run_has_zero_eta_and_full_percent() -> None:
    """Test that done >= total gives ETA 0 and 100 %, also for an empty total."""
    clock = FakeClock()
    tracker = _tracker(clock, total=5)
    clock.tick(1.0)
    snap = tracker.advance(5)
    assert (snap.eta_seconds, snap.percent) == (0.0, 100.0)
    empty = _tracker(clock, total=0).snapshot()
    assert (empty.eta_seconds, empty.percent) == (0.0, 100.0)


def test_that_logging_is_throttled_to_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    """Test that 200 advances over 100 s with a 10 s interval log exactly 10 lines, in the stated format."""
    clock = FakeClock()
    tracker = _tracker(clock, total=1000, label="events[1-1000]", log_interval=10.0)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        for _ in range(200):
            clock.tick(0.5)
            tracker.advance(2)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert len(messages) == 10
    assert messages[0] == "events[1-1000]: 40/1000 rows (4.0%), 4 rows/s, ETA 4m00s"
    assert messages[-1] == "events[1-1000]: 400/1000 rows (40.0%), 4 rows/s, ETA 2m30s"


def test_that_the_log_line_without_a_total_leaves_out_the_percent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test that an unknown total logs count, rate and an unknown ETA, and log() logs at once."""
    clock = FakeClock()
    tracker = _tracker(clock)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        clock.tick(4.0)
        tracker.advance(100)  # before the interval: nothing logged
        tracker.log()
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert messages == ["progress: 100 rows, 25 rows/s, ETA unknown"]


def test_that_an_infinite_interval_never_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Test that log_interval=inf turns the periodic log line off."""
    clock = FakeClock()
    tracker = _tracker(clock, total=10, log_interval=math.inf)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        for _ in range(10):
            clock.tick(3600.0)
            tracker.advance(1)
    assert [r for r in caplog.records if r.name == LOGGER_NAME] == []


def test_that_memory_stays_bounded_however_often_it_advances() -> None:
    """Test that 200,000 advances over 200 s keep only a window's worth of rate samples."""
    clock = FakeClock()
    tracker = _tracker(clock)
    for _ in range(200_000):
        clock.tick(0.001)
        tracker.advance(1)
    assert tracker.done == 200_000
    assert len(tracker._samples) <= 40
    assert tracker.snapshot().rate_per_second == pytest.approx(1000.0, rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total": -1}, "^total must not be negative$"),
        ({"log_interval": 0}, "^log_interval must be greater than 0$"),
        ({"log_interval": math.nan}, "^log_interval must be greater than 0$"),
    ],
)
def test_that_bad_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    """Test that a negative total or a non-positive log interval raises ValueError."""
    with pytest.raises(ValueError, match=message):
        ProgressTracker(**kwargs)


def test_that_a_negative_advance_is_rejected() -> None:
    """Test that advance() refuses a negative count and leaves the count unchanged."""
    tracker = _tracker(FakeClock())
    with pytest.raises(ValueError, match=r"^n must not be negative$"):
        tracker.advance(-1)
    assert tracker.done == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (12, "12s"),
        (12.4, "12s"),
        (59.6, "1m00s"),
        (185, "3m05s"),
        (3599.4, "59m59s"),
        (3720, "1h02m"),
        (3779, "1h02m"),
        (90_000, "25h00m"),
    ],
)
def test_that_durations_are_formatted_for_people(seconds: float, text: str) -> None:
    """Test that format_duration gives seconds, minutes+seconds, or hours+minutes."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "message"),
    [(-1, "^seconds must not be negative$"), (math.inf, "^seconds must be finite$")],
)
def test_that_impossible_durations_are_rejected(seconds: float, message: str) -> None:
    """Test that format_duration refuses negative and infinite durations."""
    with pytest.raises(ValueError, match=message):
        format_duration(seconds)
