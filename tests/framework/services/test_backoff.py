"""Capped exponential backoff and its reset after a stable run."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker_mesos.framework.services.backoff import BackoffPolicy, BackoffState


def test_delays_double_up_to_the_cap() -> None:
    policy = BackoffPolicy(initial=1, factor=2, max=60)
    assert [policy.delay(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_failed_counts_and_schedules_the_next_launch() -> None:
    policy = BackoffPolicy(initial=1, factor=2, max=60)
    state = BackoffState()
    waits = []
    for now in (100.0, 200.0, 300.0, 400.0):
        state = state.failed(policy, now, "exit code 1")
        waits.append(state.next_launch_at - now)
        assert not state.ready(now) and state.ready(state.next_launch_at)
    assert waits == [1, 2, 4, 8]
    assert state.failures == 4 and state.last_message == "exit code 1" and state.last_failure_at == 400.0


def test_only_a_launch_after_the_last_failure_proves_stability() -> None:
    policy = BackoffPolicy(reset_after=60)
    state = BackoffState().failed(policy, 100.0, "x")
    assert not state.proves_stable(policy, launched_at=50.0, running_since=51.0, now=1000.0)  # started earlier
    assert not state.proves_stable(policy, launched_at=101.0, running_since=102.0, now=161.0)  # 59 s only
    assert state.proves_stable(policy, launched_at=101.0, running_since=102.0, now=162.0)
    assert not BackoffState().proves_stable(policy, 0.0, 0.0, 1e9)  # nothing to reset


@given(st.integers(min_value=1, max_value=100_000), st.floats(1.0, 100.0), st.floats(0.001, 100.0))
def test_delay_is_monotonic_and_capped(failures: int, factor: float, initial: float) -> None:
    policy = BackoffPolicy(initial=initial, factor=factor, max=max(initial, 600.0))
    assert initial <= policy.delay(failures) <= policy.max
    assert policy.delay(failures) <= policy.delay(failures + 1)


def test_wire_round_trip_and_refusals() -> None:
    state = BackoffState(3, 12.5, 10.0, "exit code 2")
    assert BackoffState.from_wire(state.to_wire()) == state
    for bad in ({}, {"failures": -1, "next_launch_at": 0, "last_failure_at": None, "last_message": ""}, [1]):
        try:
            BackoffState.from_wire(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
