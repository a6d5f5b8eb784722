"""Capped exponential backoff between launches of a failing service, reset once a launch proves stable.

After the ``n``-th failure in a row the next launch waits ``min(max, initial * factor ** (n - 1))``
seconds; a task launched after the last failure that stays RUNNING for ``reset_after`` seconds clears
the count (instances that were already running before the failure do not: they prove nothing about the
failing one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """A service's ``backoff`` section (seconds)."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        """How long to wait before the next launch after ``failures`` failures in a row (0: none)."""
        if failures <= 0:
            return 0.0
        # the exponent is capped so a long failure streak cannot overflow a float
        exponent = min(failures - 1, 1024)
        try:
            raw = self.initial * self.factor**exponent
        except OverflowError:
            return self.max
        return min(self.max, raw)


@dataclass(frozen=True, slots=True)
class BackoffState:
    """Failures in a row, when the next launch may happen, and what the last failure was."""

    failures: int = 0
    next_launch_at: float = 0.0
    last_failure_at: float | None = None
    last_message: str = ""

    def failed(self, policy: BackoffPolicy, now: float, message: str) -> BackoffState:
        failures = self.failures + 1
        return BackoffState(failures, now + policy.delay(failures), now, message)

    def ready(self, now: float) -> bool:
        return now >= self.next_launch_at

    def proves_stable(self, policy: BackoffPolicy, launched_at: float | None, running_since: float | None,
                      now: float) -> bool:
        """Whether a task launched at ``launched_at`` and RUNNING since ``running_since`` resets the count."""
        if self.failures == 0 or launched_at is None or running_since is None:
            return False
        after_failure = self.last_failure_at is None or launched_at >= self.last_failure_at
        return after_failure and now - running_since >= policy.reset_after

    def to_wire(self) -> dict[str, Any]:
        return {"failures": self.failures, "next_launch_at": self.next_launch_at,
                "last_failure_at": self.last_failure_at, "last_message": self.last_message}

    @classmethod
    def from_wire(cls, data: Any) -> BackoffState:
        if not isinstance(data, dict):
            raise ValueError("backoff state must be a map")
        try:
            failures, at, last_at, msg = (data["failures"], data["next_launch_at"], data["last_failure_at"],
                                          data["last_message"])
        except KeyError as exc:
            raise ValueError(f"backoff state lacks {exc.args[0]!r}") from None
        if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
            raise ValueError(f"backoff failures must be a non-negative integer, not {failures!r}")
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise ValueError(f"backoff next_launch_at must be a number, not {at!r}")
        if last_at is not None and (not isinstance(last_at, int | float) or isinstance(last_at, bool)):
            raise ValueError(f"backoff last_failure_at must be a number or null, not {last_at!r}")
        if not isinstance(msg, str):
            raise ValueError("backoff last_message must be a string")
        return cls(failures, float(at), None if last_at is None else float(last_at), msg)
