"""Rate limits for log lines that strangers can trigger (rejected messages, refused calls).

A flood of bad messages must not become a flood of log lines: per key (a queue name, a reason class),
at most ``burst`` lines pass per ``period`` seconds; the rest are counted, and the count is reported
with the next line let through, or by ``drain`` when the period is over. Time is passed in.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

DEFAULT_BURST = 5
DEFAULT_PERIOD = 10.0
MAX_KEYS = 1_000  # keys remembered; the oldest window is forgotten beyond this


@dataclass(slots=True)
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0


class LogLimiter:
    """``allow(key, now)`` says whether a line may be written now, and how many were held back before it."""

    def __init__(self, burst: int = DEFAULT_BURST, period: float = DEFAULT_PERIOD) -> None:
        self.burst = burst
        self.period = period
        self._windows: collections.OrderedDict[str, _Window] = collections.OrderedDict()
        self.total_suppressed = 0

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """(may this line be written, lines suppressed for ``key`` since the last one written)."""
        window = self._windows.get(key)
        if window is None or now - window.started >= self.period:
            held = window.suppressed if window is not None else 0
            window = _Window(now)
            self._windows[key] = window
            self._windows.move_to_end(key)
            while len(self._windows) > MAX_KEYS:
                self._windows.popitem(last=False)
            window.passed = 1
            return True, held
        if window.passed < self.burst:
            window.passed += 1
            held, window.suppressed = window.suppressed, 0
            return True, held
        window.suppressed += 1
        self.total_suppressed += 1
        return False, 0

    def drain(self, now: float) -> list[tuple[str, int]]:
        """Keys whose period is over with lines still held back: (key, count), each reported once."""
        out = []
        for key, window in list(self._windows.items()):
            if now - window.started >= self.period:
                if window.suppressed:
                    out.append((key, window.suppressed))
                del self._windows[key]
        return out
