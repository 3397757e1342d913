"""Progress of a long run: items done, rate, ETA, and a log line at intervals (never per item).

A :class:`ProgressTracker` is advanced by the number of items each finished piece of work held
and answers with a :class:`ProgressSnapshot`. Its rate is measured over a recent window, so a
slow start (connections, warm-up, a cold cache) does not distort the ETA for the rest of the run;
the overall rate stays available as :attr:`ProgressSnapshot.overall_rate_per_second`::

    advance(n) --> samples (time, done), one per SAMPLE_SPACING --> window rate --> ETA
                                                                \\-> log line, once per log_interval

The clock is injectable so that tests are deterministic. A tracker is not thread-safe: advance
it from one thread (or from the event loop).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "RATE_WINDOW_SECONDS",
    "ProgressCallback",
    "ProgressSnapshot",
    "ProgressTracker",
    "format_duration",
]

log = logging.getLogger(__name__)

# The rate (and so the ETA) is measured over roughly the last RATE_WINDOW_SECONDS.
# Shorter: follows changes of speed sooner but jumps with every slow batch; longer: steadier,
# but a slow start keeps weighing on the ETA for longer.
RATE_WINDOW_SECONDS = 30.0

# At most RATE_WINDOW_SECONDS / SAMPLE_SPACING (time, done) samples are kept, however many
# times advance() is called. Smaller: the window's edge is more exact; larger: fewer samples.
SAMPLE_SPACING = RATE_WINDOW_SECONDS / 30


class ProgressSnapshot(NamedTuple):
    """Where a run stands at one moment.

    :param done: items processed so far.
    :param total: items expected in all, or None when unknown.
    :param elapsed_seconds: seconds since the tracker started.
    :param rate_per_second: items per second over the recent window.
    :param eta_seconds: seconds left at the recent rate; None when the total or the rate is unknown.
    :param percent: done as a percentage of total; None when the total is unknown.
    """

    done: int
    total: int | None
    elapsed_seconds: float
    rate_per_second: float
    eta_seconds: float | None
    percent: float | None

    @property
    def overall_rate_per_second(self) -> float:
        """Items per second since the start (the recent rate is :attr:`rate_per_second`)."""
        return self.done / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


ProgressCallback = Callable[[ProgressSnapshot], None]


class ProgressTracker:
    """Counts processed items, measures their rate and ETA, and logs now and then.

    :param total: items expected in all, or None when unknown (then no percent and no ETA).
    :param label: what is being processed, first word of the log line (e.g. a chunk or table name).
    :param log_interval: seconds between two log lines at the least; ``math.inf`` never logs.
    :param logger: where the log lines go; this module's logger by default.
    :param clock: a monotonic clock in seconds; inject a fake one in tests.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        label: str = "",
        log_interval: float = 10.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError("total must not be negative")
        if not log_interval > 0:
            raise ValueError("log_interval must be greater than 0")
        self.total = total
        self.label = label
        self.log_interval = log_interval
        self._logger = logger if logger is not None else log
        self._clock = clock
        self._started = clock()
        self._last_log = self._started
        self._done = 0
        # (time, done) samples, oldest first; the first one is the base of the window rate.
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])

    @property
    def done(self) -> int:
        """Items processed so far."""
        return self._done

    def advance(self, n: int) -> ProgressSnapshot:
        """Count ``n`` more processed items, log if a log line is due, and return the snapshot.

        :param n: items just processed (0 is allowed: it refreshes the rate and may log).
        """
        if n < 0:
            raise ValueError("n must not be negative")
        now = self._clock()
        self._done += n
        if now - self._samples[-1][0] >= SAMPLE_SPACING:
            self._samples.append((now, self._done))
        snapshot = self._snapshot_at(now)
        if now - self._last_log >= self.log_interval:
            self._last_log = now
            self._log(snapshot)
        return snapshot

    def snapshot(self) -> ProgressSnapshot:
        """Return where the run stands now, without counting anything or logging."""
        return self._snapshot_at(self._clock())

    def log(self) -> ProgressSnapshot:
        """Log the current snapshot now, whatever the interval (e.g. once at the end of a run)."""
        now = self._clock()
        self._last_log = now
        snapshot = self._snapshot_at(now)
        self._log(snapshot)
        return snapshot

    def _snapshot_at(self, now: float) -> ProgressSnapshot:
        # Keep as the base the newest sample that is at least a window old (or the oldest one).
        while len(self._samples) > 1 and self._samples[1][0] <= now - RATE_WINDOW_SECONDS:
            self._samples.popleft()
        base_time, base_done = self._samples[0]
        span = now - base_time
        rate = (self._done - base_done) / span if span > 0 else 0.0
        percent: float | None = None
        eta: float | None = None
        if self.total is not None:
            left = max(self.total - self._done, 0)
            percent = 100.0 * self._done / self.total if self.total else 100.0
            if left == 0:
                eta = 0.0
            elif rate > 0:
                eta = left / rate
        return ProgressSnapshot(
            done=self._done,
            total=self.total,
            elapsed_seconds=now - self._started,
            rate_per_second=rate,
            eta_seconds=eta,
            percent=percent,
        )

    def _log(self, s: ProgressSnapshot) -> None:
        label = self.label or "progress"
        eta = "unknown" if s.eta_seconds is None else format_duration(s.eta_seconds)
        if s.total is None:
            self._logger.info(
                "%s: %d rows, %.0f rows/s, ETA %s", label, s.done, s.rate_per_second, eta
            )
        else:
            self._logger.info(
                "%s: %d/%d rows (%.1f%%), %.0f rows/s, ETA %s",
                label,
                s.done,
                s.total,
                s.percent,
                s.rate_per_second,
                eta,
            )


def format_duration(seconds: float) -> str:
    """Format a duration for people, to the second: "12s", "3m05s", "1h02m" (hours and minutes).

    :param seconds: a finite, non-negative number of seconds.
    """
    if not math.isfinite(seconds):
        raise ValueError("seconds must be finite")
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
