"""How often live traffic repaints the screen.

The app and the proxy share one event loop. Repainting the message list costs 7-10 ms of
compositing; repainting on every store report took a third of the loop from a busy proxy
(throughput 0.54-0.63x headless). So live data repaints at once while the loop has time to
spare, and at most every `BUSY_REPAINT_INTERVAL` while it is saturated: the screen gives way
to the traffic it shows, and the status bar says so. What the user does (scrolling, moving
the cursor, filtering) is never paced.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SAMPLE_INTERVAL = 0.25
BUSY_ENTER = 0.9  # share of wall time the loop's thread spends on the CPU
BUSY_ENTER_SAMPLES = 4  # for a second: building a screen or a short burst does not count
BUSY_LEAVE = 0.6
BUSY_REPAINT_INTERVAL = 0.2
BUSY_SUMMARY_INTERVAL = 1.0
# How often the store reports changes to the app: often enough that a message is on screen
# well within 50 ms while there is time to spare; rarely when nothing would be painted anyway.
LIVE_NOTIFY_INTERVAL = 0.005
BUSY_NOTIFY_INTERVAL = 0.1


class LoopLoad:
    """How busy the event loop is: the share of wall time its thread spent on the CPU since
    the previous sample. `sample()` must run on the loop's thread (a timer of the app)."""

    def __init__(
        self,
        cpu_clock: Callable[[], float] = time.thread_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cpu_clock, self._clock = cpu_clock, clock
        self._last = (clock(), cpu_clock())
        self.busy = 0.0
        self.saturated = False
        self._busy_samples = 0  # consecutive samples at or above BUSY_ENTER

    def sample(self) -> None:
        now, cpu = self._clock(), self._cpu_clock()
        wall = now - self._last[0]
        if wall <= 0:
            return
        self.busy = (cpu - self._last[1]) / wall
        self._last = (now, cpu)
        self._busy_samples = self._busy_samples + 1 if self.busy >= BUSY_ENTER else 0
        if self.saturated:
            # A lower threshold to leave, so that the pace does not flip near the limit.
            self.saturated = self.busy >= BUSY_LEAVE
        else:
            self.saturated = self._busy_samples >= BUSY_ENTER_SAMPLES

    @property
    def repaint_interval(self) -> float:
        """Seconds live data waits after the previous live repaint."""
        return BUSY_REPAINT_INTERVAL if self.saturated else 0.0

    @property
    def notify_interval(self) -> float:
        """Seconds between the store's change reports to the app."""
        return BUSY_NOTIFY_INTERVAL if self.saturated else LIVE_NOTIFY_INTERVAL
