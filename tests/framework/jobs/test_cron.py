"""Cron schedules in a zone, across daylight-saving changes: expectations written as ISO times."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_mesos.framework.jobs.cron import Schedule
from broker_mesos.framework.planning import CommandError


def at(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def fires(schedule: Schedule, start: str, count: int) -> list[float]:
    out, t = [], at(start)
    for _ in range(count):
        nxt = schedule.next_after(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


def test_fixed_time_in_spring_forward_gap_runs_right_after_the_change() -> None:
    # Berlin skips 02:00-03:00 CET on 2026-03-29: 02:30 does not exist that day
    berlin = Schedule("30 2 * * *", "Europe/Berlin")
    assert fires(berlin, "2026-03-27T12:00:00+01:00", 4) == [
        at("2026-03-28T02:30:00+01:00"), at("2026-03-29T03:00:00+02:00"),
        at("2026-03-30T02:30:00+02:00"), at("2026-03-31T02:30:00+02:00")]


def test_fixed_time_in_fall_back_overlap_runs_once_at_the_first_occurrence() -> None:
    # Berlin repeats 02:00-03:00 on 2026-10-25 (CEST, then CET)
    berlin = Schedule("30 2 * * *", "Europe/Berlin")
    assert fires(berlin, "2026-10-24T12:00:00+02:00", 3) == [
        at("2026-10-25T02:30:00+02:00"), at("2026-10-26T02:30:00+01:00"),
        at("2026-10-27T02:30:00+01:00")]
    # asked from inside the second occurrence, the next run is tomorrow's, never an earlier instant
    assert berlin.next_after(at("2026-10-25T02:15:00+01:00")) == at("2026-10-26T02:30:00+01:00")
    assert berlin.next_after(at("2026-10-25T02:30:00+02:00")) == at("2026-10-26T02:30:00+01:00")


def test_hourly_follows_elapsed_time_across_both_changes() -> None:
    hourly = Schedule("0 * * * *", "Europe/Berlin")
    assert fires(hourly, "2026-03-29T00:30:00+01:00", 3) == [
        at("2026-03-29T01:00:00+01:00"), at("2026-03-29T03:00:00+02:00"), at("2026-03-29T04:00:00+02:00")]
    # the repeated hour fires twice: 02:00 CEST and 02:00 CET, one hour apart
    assert fires(hourly, "2026-10-25T01:30:00+02:00", 4) == [
        at("2026-10-25T02:00:00+02:00"), at("2026-10-25T02:00:00+01:00"),
        at("2026-10-25T03:00:00+01:00"), at("2026-10-25T04:00:00+01:00")]


def test_wildcard_minute_inside_the_gap_is_skipped_and_repeats_in_the_overlap() -> None:
    half = Schedule("*/30 2 * * *", "Europe/Berlin")
    assert fires(half, "2026-03-29T01:30:00+01:00", 1) == [at("2026-03-30T02:00:00+02:00")]
    assert fires(half, "2026-10-25T01:30:00+02:00", 5) == [
        at("2026-10-25T02:00:00+02:00"), at("2026-10-25T02:30:00+02:00"), at("2026-10-25T02:00:00+01:00"),
        at("2026-10-25T02:30:00+01:00"), at("2026-10-26T02:00:00+01:00")]


def test_new_york_changes() -> None:
    ny_gap = Schedule("30 2 * * *", "America/New_York")  # 2026-03-08 skips 02:00-03:00 EST
    assert fires(ny_gap, "2026-03-08T00:00:00-05:00", 2) == [
        at("2026-03-08T03:00:00-04:00"), at("2026-03-09T02:30:00-04:00")]
    ny_overlap = Schedule("30 1 * * *", "America/New_York")  # 2026-11-01 repeats 01:00-02:00
    assert fires(ny_overlap, "2026-11-01T00:00:00-04:00", 2) == [
        at("2026-11-01T01:30:00-04:00"), at("2026-11-02T01:30:00-05:00")]


def test_seconds_field_comes_first() -> None:
    every2 = Schedule("*/2 * * * * *")
    assert fires(every2, "2026-01-01T00:00:00+00:00", 4) == [at("2026-01-01T00:00:00+00:00") + s
                                                             for s in (2, 4, 6, 8)]
    assert every2.next_after(at("2026-01-01T00:00:01.5+00:00")) == at("2026-01-01T00:00:02+00:00")


def test_names_last_day_and_nth_weekday() -> None:
    assert Schedule("0 9 * * MON#1").next_after(at("2026-03-01T00:00:00+00:00")) == at("2026-03-02T09:00:00+00:00")
    assert Schedule("0 0 L * *").next_after(at("2026-02-10T00:00:00+00:00")) == at("2026-02-28T00:00:00+00:00")
    assert Schedule("0 0 * FEB 5L").next_after(at("2026-01-01T00:00:00+00:00")) == at("2026-02-27T00:00:00+00:00")


@pytest.mark.parametrize(("expr", "zone", "field"), [
    ("* * *", "UTC", "schedule"), ("61 * * * *", "UTC", "schedule"), ("0 0 30 2 *", "UTC", "schedule"),
    ("", "UTC", "schedule"), ("* * * * * * *", "UTC", "schedule"), ("* * * * *", "Mars/Olympus", "timezone"),
    ("* * * * *", "../../etc/passwd", "timezone"), ("* * * * *", "", "timezone"),
])
def test_invalid_expressions_and_zones_are_refused_naming_the_field(expr: str, zone: str, field: str) -> None:
    with pytest.raises(CommandError, match=f"^{field}:"):
        Schedule(expr, zone)


@given(st.floats(min_value=1.6e9, max_value=2.1e9),
       st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
       st.sampled_from(["30 2 * * *", "0 * * * *", "*/7 * * * *", "*/30 2 * * *", "15 1,2,3 * * SUN",
                        "*/13 * * * * *"]))
def test_next_is_strictly_later_and_nothing_fires_in_between(t: float, zone: str, expr: str) -> None:
    schedule = Schedule(expr, zone)
    nxt = schedule.next_after(t)
    assert nxt is not None and nxt > t
    assert nxt == int(nxt)
    # asking from any whole second in between yields the same instant (spot-checked at the midpoint)
    mid = float(int((t + nxt) / 2))
    if t < mid < nxt:
        assert schedule.next_after(mid) == nxt
