"""Job definitions: defaults, every refusal naming its field, and the wire round trip."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import yaml

from broker_mesos.framework.jobs.spec import ConcurrencyPolicy, JobSpec, RetryBackoff, parse_job
from broker_mesos.framework.planning import CommandError

MINIMAL = {"name": "nightly-report", "schedule": "30 2 * * *", "command": "make report"}


def test_defaults() -> None:
    spec = parse_job(MINIMAL)
    assert spec == JobSpec(name="nightly-report", schedule="30 2 * * *", command="make report")
    assert (spec.timezone, spec.cpus, spec.mem, spec.disk, spec.env, spec.user) == ("UTC", 0.1, 64.0, 0.0, (), "")
    assert spec.concurrency_policy is ConcurrencyPolicy.FORBID
    assert (spec.starting_deadline, spec.retries, spec.history_limit, spec.suspended) == (60.0, 0, 50, False)
    assert spec.retry_backoff == RetryBackoff(1.0, 2.0, 60.0)


def test_full_yaml_document() -> None:
    spec = parse_job(yaml.safe_load("""
name: backup
schedule: "0 */6 * * *"
timezone: Europe/Berlin
command: [/usr/bin/backup, --all]
cpus: 2
mem: 512
disk: 100
env: {TARGET: s3, LEVEL: "3"}
user: backup
concurrency_policy: replace
starting_deadline: 300
retries: 2
retry_backoff: {initial: 5, factor: 3, max: 30}
history_limit: 10
suspended: true
"""))
    assert spec.command == ("/usr/bin/backup", "--all")
    assert spec.environment == {"LEVEL": "3", "TARGET": "s3"} and spec.env == (("LEVEL", "3"), ("TARGET", "s3"))
    assert (spec.cpus, spec.mem, spec.disk, spec.user) == (2.0, 512.0, 100.0, "backup")
    assert spec.concurrency_policy is ConcurrencyPolicy.REPLACE and spec.suspended
    assert [spec.retry_backoff.delay(n) for n in (1, 2, 3, 4)] == [5.0, 15.0, 30.0, 30.0]
    # the wire form is the YAML form: it survives msgpack and parses back equal
    wire = msgpack.unpackb(msgpack.packb(spec.to_wire()))
    assert parse_job(wire) == spec == JobSpec.from_wire(wire)


def test_default_backoff_delays() -> None:
    assert [RetryBackoff().delay(n) for n in (1, 2, 3, 6, 7, 100)] == [1.0, 2.0, 4.0, 32.0, 60.0, 60.0]


def with_(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, **changes}


@pytest.mark.parametrize(("data", "field"), [
    ({"schedule": "* * * * *", "command": "x"}, "name"),
    ({"name": "a", "command": "x"}, "schedule"),
    ({"name": "a", "schedule": "* * * * *"}, "command"),
    (with_(name="Nightly"), "name"), (with_(name="-x"), "name"), (with_(name="a" * 64), "name"),
    (with_(name=5), "name"), (with_(schedule="every day"), "schedule"), (with_(schedule=5), "schedule"),
    (with_(timezone="Nowhere/Land"), "timezone"), (with_(command=""), "command"), (with_(command=[]), "command"),
    (with_(command=["ls", 3]), "command"), (with_(command={"a": 1}), "command"),
    (with_(command="x" * (64 * 1024 + 1)), "command"), (with_(command="a\0b"), "command"),
    (with_(cpus=0), "cpus"), (with_(cpus=-1), "cpus"), (with_(cpus="1"), "cpus"), (with_(cpus=True), "cpus"),
    (with_(cpus=float("nan")), "cpus"), (with_(mem=0), "mem"), (with_(disk=-1), "disk"),
    (with_(env=["A=1"]), "env"), (with_(env={"A": 1}), "env.A"), (with_(env={"1A": "x"}), "env"),
    (with_(env={f"V{i}": "x" for i in range(257)}), "env"), (with_(env={"BMESOS_JOB": "x"}), "env.BMESOS_JOB"),
    (with_(user="Root!"), "user"), (with_(user=0), "user"),
    (with_(concurrency_policy="queue"), "concurrency_policy"),
    (with_(starting_deadline=0), "starting_deadline"), (with_(starting_deadline=86401), "starting_deadline"),
    (with_(retries=-1), "retries"), (with_(retries=101), "retries"), (with_(retries=1.5), "retries"),
    (with_(retry_backoff=5), "retry_backoff"), (with_(retry_backoff={"jitter": 1}), "retry_backoff"),
    (with_(retry_backoff={"factor": 0.5}), "retry_backoff.factor"),
    (with_(retry_backoff={"initial": 10, "max": 5}), "retry_backoff.max"),
    (with_(history_limit=0), "history_limit"), (with_(history_limit=1001), "history_limit"),
    (with_(suspended="yes"), "suspended"),
])
def test_refusals_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(CommandError, match=rf"^{field.replace('.', '[.]')}\b"):
        parse_job(data)


def test_unknown_keys_and_non_mappings_are_refused() -> None:
    with pytest.raises(CommandError, match=r"unknown key.*shedule"):
        parse_job(with_(shedule="* * * * *"))
    with pytest.raises(CommandError, match="mapping"):
        parse_job(["name", "x"])


def test_bounds_are_inclusive() -> None:
    spec = parse_job(with_(name="a" * 63, retries=100, history_limit=1000, starting_deadline=86400,
                           command="x" * (64 * 1024), env={f"V{i}": "x" for i in range(256)}))
    assert (spec.retries, spec.history_limit, len(spec.env)) == (100, 1000, 256)


def test_from_wire_raises_value_error() -> None:
    with pytest.raises(ValueError, match="job spec: retries"):
        JobSpec.from_wire(with_(retries=-2))
