"""The health-check state machine (core.health): grace period, first success, flapping, kill after N;
and the pure helpers the agent uses (port resolution, messages)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_mesos.core.errors import ProtocolError
from broker_mesos.core.health import (
    HealthState,
    HealthVerdict,
    brief,
    check_port,
    first_check_at,
    kill_message,
    update_message,
)
from broker_mesos.core.protocol import CommandInfo, HealthCheck, HealthCheckType
from broker_mesos.core.resources import Resources


def tcp(**kw: float) -> HealthCheck:
    return HealthCheck(HealthCheckType.TCP, port=80, **kw)  # type: ignore[arg-type]


def test_first_success_publishes_healthy_once() -> None:
    state = HealthState(tcp(), started_at=100.0)
    assert state.observe(True, 101.0) == HealthVerdict(True, True, False, 0, True)
    assert state.observe(True, 102.0) == HealthVerdict(False, True, False, 0, True)
    assert state.healthy is True


def test_failures_in_the_grace_period_before_any_success_are_ignored() -> None:
    state = HealthState(tcp(grace_period_seconds=10.0, consecutive_failures=1), started_at=100.0)
    for now in (100.0, 105.0, 109.9):
        verdict = state.observe(False, now)
        assert verdict == HealthVerdict(False, None, False, 0, False)
    assert state.healthy is None and state.consecutive_failures == 0
    # the grace is over: the first failure counts, turns the task unhealthy, and (N = 1) kills it
    assert state.observe(False, 110.0) == HealthVerdict(True, False, True, 1, True)


def test_after_a_first_success_the_grace_period_no_longer_applies() -> None:
    state = HealthState(tcp(grace_period_seconds=60.0, consecutive_failures=2), started_at=0.0)
    state.observe(True, 1.0)
    assert state.observe(False, 2.0) == HealthVerdict(True, False, False, 1, True)
    assert state.observe(False, 3.0) == HealthVerdict(False, False, True, 2, True)


def test_unknown_turns_unhealthy_after_the_grace_and_kill_comes_at_n() -> None:
    state = HealthState(tcp(grace_period_seconds=0.0, consecutive_failures=3), started_at=0.0)
    verdicts = [state.observe(False, t) for t in (1.0, 2.0, 3.0)]
    assert [v.publish for v in verdicts] == [True, False, False]  # unknown -> False once
    assert [v.kill for v in verdicts] == [False, False, True]
    assert [v.consecutive_failures for v in verdicts] == [1, 2, 3]


def test_flapping_publishes_every_change_and_success_resets_the_count() -> None:
    state = HealthState(tcp(grace_period_seconds=0.0, consecutive_failures=2), started_at=0.0)
    seen = []
    for t, ok in enumerate([True, False, True, False, True, False, False]):
        v = state.observe(ok, float(t))
        seen.append((v.publish, v.healthy, v.kill))
    assert seen == [(True, True, False), (True, False, False), (True, True, False), (True, False, False),
                    (True, True, False), (True, False, False), (False, False, True)]


def test_nothing_is_decided_after_the_kill() -> None:
    state = HealthState(tcp(grace_period_seconds=0.0, consecutive_failures=1), started_at=0.0)
    assert state.observe(False, 1.0).kill
    for ok in (True, False):
        verdict = state.observe(ok, 2.0)
        assert not verdict.publish and not verdict.kill and not verdict.counted
    assert state.healthy is False


@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 5.0)), max_size=40), st.integers(1, 5),
       st.floats(0.0, 20.0))
def test_invariants_over_any_sequence(results: list[tuple[bool, float]], n: int, grace: float) -> None:
    """Kill is given at most once, exactly when N counted failures in a row are reached; publish only
    when the health changes; no success ever publishes False."""
    state = HealthState(tcp(grace_period_seconds=grace, consecutive_failures=n), started_at=0.0)
    now, last, run, kills = 0.0, None, 0, 0
    for ok, step in results:
        now += step
        killed_before = state.killed
        v = state.observe(ok, now)
        if killed_before:
            assert not v.counted and not v.publish and not v.kill
            continue
        if v.counted:
            run = 0 if ok else run + 1
            assert v.healthy is ok
            assert v.publish == (last is not ok)
            last = ok
        else:
            assert not ok and not v.publish and now < grace
        assert v.consecutive_failures == run
        assert v.kill == (run == n)
        kills += v.kill
    assert kills <= 1


def test_first_check_is_due_after_the_delay() -> None:
    assert first_check_at(tcp(delay_seconds=15.0), 100.0) == 115.0


def test_check_port_takes_port_or_the_indexed_port_of_the_ranges_in_order() -> None:
    resources = Resources.parse("cpus:1;ports:[31005-31006,31000-31001]")  # normalised: ascending
    assert check_port(HealthCheck(HealthCheckType.HTTP, port=8080, port_index=3), resources) == 8080
    got = [check_port(HealthCheck(HealthCheckType.TCP, port_index=i), resources) for i in range(4)]
    assert got == [31000, 31001, 31005, 31006]
    with pytest.raises(LookupError, match="4 port"):
        check_port(HealthCheck(HealthCheckType.TCP, port_index=4), resources)
    with pytest.raises(LookupError, match="0 port"):
        check_port(HealthCheck(HealthCheckType.TCP), Resources.of(cpus=1))


def test_messages() -> None:
    assert update_message(False, "HTTP 500 from 127.0.0.1:31001/health") == (
        "health check failed: HTTP 500 from 127.0.0.1:31001/health")
    assert update_message(True, "TCP connection to 127.0.0.1:1 accepted").startswith("health check passed: ")
    assert kill_message(2, "x\n y") == "killed after 2 consecutive failed health checks: x y"
    assert len(brief("a" * 1000)) == 300


def test_health_check_validation() -> None:
    with pytest.raises(ProtocolError, match="needs a command"):
        HealthCheck(HealthCheckType.COMMAND)
    with pytest.raises(ProtocolError, match="needs a command"):
        HealthCheck(HealthCheckType.COMMAND, command=CommandInfo(shell=False))
    HealthCheck(HealthCheckType.COMMAND, command=CommandInfo(shell=False, arguments=["true"]))
    for path in ("", "health", "/a b", "/\n", "/" + "x" * 2048):
        with pytest.raises(ProtocolError, match="path"):
            HealthCheck(HealthCheckType.HTTP, path=path)
    assert HealthCheck(HealthCheckType.HTTP, path="/health?x=1").path == "/health?x=1"
