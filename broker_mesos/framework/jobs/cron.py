"""Cron schedules in a time zone: when a job fires next.

Expressions are cronsim's (Debian cron syntax): 5 fields ``minute hour day-of-month month day-of-week``
or 6 with the seconds FIRST (``*/2 * * * * *``: every 2 s); names (``MON``, ``JAN``), ``L`` (last day,
``5L`` last Friday), ``#`` (``MON#1``), ``LW``. A day-of-month and a day-of-week both restricted match
either (OR), as in cron.

Daylight-saving changes (checked by tests/framework/jobs/test_cron.py) follow Debian cron:

* a 5-field expression with a fixed minute and hour (neither field starts with ``*``, e.g.
  ``30 2 * * *``) keeps to wall-clock time: scheduled inside a spring-forward gap it runs right after
  the change (02:30 on the day Berlin skips 02:00-03:00 runs at 03:00 CEST), and inside a fall-back
  overlap it runs once, at the first occurrence (02:30 CEST, not again at 02:30 CET);
* every other expression (``0 * * * *``, ``*/30 2 * * *``, any 6-field one) follows elapsed time: an
  instant that does not exist is skipped (``*/30 2 * * *`` does not run on the spring-forward day) and a
  repeated hour runs twice (hourly jobs fire at 02:00 CEST and again at 02:00 CET).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from broker_mesos.framework.planning import CommandError

MAX_EXPRESSION_CHARS = 256
# asked from inside a fall-back overlap, cronsim may answer the overlap's first occurrence, which is
# before ``t``: such answers are stepped over, a bounded number of times.
_MAX_STEPS_BACK = 4


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated cron expression in an IANA time zone (``Europe/Berlin``, ``UTC``)."""

    expr: str
    timezone: str = "UTC"
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str) or not self.expr.strip():
            raise CommandError("schedule: must be a cron expression (5 fields, or 6 with seconds first)")
        if len(self.expr) > MAX_EXPRESSION_CHARS:
            raise CommandError(f"schedule: longer than {MAX_EXPRESSION_CHARS} characters")
        if not isinstance(self.timezone, str) or not self.timezone:
            raise CommandError("timezone: must be an IANA time zone name such as UTC or Europe/Berlin")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise CommandError(f"timezone: unknown time zone {self.timezone!r}") from None
        object.__setattr__(self, "zone", zone)
        fields = len(self.expr.split())
        if fields not in (5, 6):
            raise CommandError(f"schedule: {self.expr!r} has {fields} fields; expected 5 "
                               "(minute hour day month weekday) or 6 (seconds first)")
        try:
            CronSim(self.expr, dt.datetime(2000, 1, 1, tzinfo=zone))
        except (CronSimError, ValueError, IndexError) as exc:
            raise CommandError(f"schedule: {self.expr!r} is not a valid cron expression ({exc})") from None

    def next_after(self, t: float) -> float | None:
        """The first fire instant strictly after ``t`` (epoch seconds), or None when cronsim finds none
        within 50 years."""
        it = CronSim(self.expr, dt.datetime.fromtimestamp(t, self.zone))
        for _ in range(_MAX_STEPS_BACK):
            try:
                instant = next(it).timestamp()
            except StopIteration:
                return None
            if instant > t:
                return instant
        return None

    def iso(self, t: float) -> str:
        """``t`` as an ISO 8601 time with offset in the schedule's zone (what operators read)."""
        return dt.datetime.fromtimestamp(t, self.zone).isoformat()
