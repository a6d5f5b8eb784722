"""Waiting on conditions with a deadline: the only way tests synchronise with other processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline."""


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
             abort: Callable[[], str | None] | None = None) -> T:
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` passes (raises).

    ``abort`` is polled too; when it returns a message the wait fails at once with it (a child died).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if abort is not None and (why := abort()):
            raise WaitTimeout(f"gave up waiting for {what}: {why}")
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)
