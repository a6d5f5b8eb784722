"""Reading a service's YAML: defaults, bounds, refusals naming the field, the wire round trip."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from broker_mesos.core.protocol import CommandInfo, HealthCheckType
from broker_mesos.framework.planning import CommandError
from broker_mesos.framework.services.constraints import Constraint
from broker_mesos.framework.services.spec import ServiceSpec, parse_service

FULL = """
name: web-1
instances: 3
command: [python3, -m, http.server]
cpus: 0.5
mem: 128
disk: 10
ports: 2
env: {MODE: prod, WORKERS: 4}
user: www
constraints: [[hostname, UNIQUE], [rack, LIKE, "r[12]"]]
health_check: {type: http, path: /health, port_index: 1, interval: 2}
backoff: {initial: 2, factor: 3, max: 100, reset_after: 30}
upgrade: {max_parallel: 2, min_healthy: 2, healthy_deadline: 60, auto_revert: false}
"""


def test_defaults() -> None:
    s = parse_service({"name": "web", "command": "run it"})
    assert (s.instances, s.cpus, s.mem, s.disk, s.ports, dict(s.env), s.user) == (1, 0.1, 64.0, 0.0, 0, {}, "")
    assert s.constraints == () and s.health_check is None
    assert (s.backoff.initial, s.backoff.factor, s.backoff.max, s.backoff.reset_after) == (1, 2, 60, 60)
    assert (s.upgrade.max_parallel, s.upgrade.healthy_deadline, s.upgrade.auto_revert) == (1, 300, True)
    assert s.min_healthy == 0
    assert s.command_info({}) == CommandInfo(value="run it", shell=True)


def test_full_yaml() -> None:
    s = parse_service(yaml.safe_load(FULL))
    assert s.command == ("python3", "-m", "http.server")
    assert s.command_info({"A": "1"}) == CommandInfo(value="python3", shell=False,
                                                    arguments=["python3", "-m", "http.server"], environment={"A": "1"})
    assert dict(s.env) == {"MODE": "prod", "WORKERS": "4"}
    assert s.constraints == (Constraint("hostname", "UNIQUE"), Constraint("rack", "LIKE", "r[12]"))
    hc = s.health_check.health_check() if s.health_check else None
    assert hc is not None and hc.type is HealthCheckType.HTTP and hc.path == "/health" and hc.port_index == 1
    assert hc.interval_seconds == 2 and hc.timeout_seconds == 5 and hc.consecutive_failures == 3
    assert s.min_healthy == 2 and not s.upgrade.auto_revert


def test_min_healthy_default_follows_instances() -> None:
    s = parse_service({"name": "w", "command": "x", "instances": 5, "upgrade": {"max_parallel": 2}})
    assert s.min_healthy == 3
    assert s.with_instances(1).min_healthy == 0
    explicit = parse_service({"name": "w", "command": "x", "instances": 5, "upgrade": {"min_healthy": 4}})
    assert explicit.with_instances(2).min_healthy == 2


def test_wire_round_trip() -> None:
    for data in (yaml.safe_load(FULL), {"name": "a", "command": "b"}):
        s = parse_service(data)
        assert ServiceSpec.from_wire(s.to_wire()) == s


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "Web"}, "name"), ({"name": "a_b"}, "name"), ({"instances": 1001}, "instances"),
    ({"instances": 1.5}, "instances"), ({"cpus": 0}, "cpus"), ({"mem": "lots"}, "mem"), ({"ports": 17}, "ports"),
    ({"command": ""}, "command"), ({"command": []}, "command"), ({"command": None}, "command"),
    ({"env": {"PORT": "1"}}, "env.PORT"), ({"env": {"BMESOS_X": "1"}}, "env.BMESOS_X"),
    ({"env": {"1A": "x"}}, "env.1A"), ({"env": {"A": True}}, "env.A"), ({"user": "Root!"}, "user"),
    ({"colour": "red"}, "colour"), ({"health_check": {"type": "ping"}}, "health_check.type"),
    ({"health_check": {"type": "http"}}, "health_check.port_index"),
    ({"health_check": {"type": "command"}}, "health_check.command"),
    ({"health_check": {"type": "command", "command": "true", "every": 1}}, "health_check.every"),
    ({"health_check": {"type": "command", "command": "true", "interval": 0}}, "health_check.interval"),
    ({"backoff": {"factor": 0.5}}, "backoff.factor"), ({"backoff": {"initial": 10, "max": 5}}, "backoff.max"),
    ({"upgrade": {"max_parallel": 0}}, "upgrade.max_parallel"),
    ({"upgrade": {"min_healthy": 2}}, "upgrade.min_healthy"), ({"upgrade": {"auto_revert": "yes"}}, "auto_revert"),
    ({"constraints": {"rack": "NEAR"}}, "constraints.rack"),
])
def test_refusals_name_the_field(change: dict[str, Any], field: str) -> None:
    data: dict[str, Any] = {"name": "web", "command": "x"}
    data.update(change)
    if data.get("command") is None:
        del data["command"]
    with pytest.raises(CommandError, match=field.replace(".", r"\.")):
        parse_service(data)


def test_not_a_mapping() -> None:
    with pytest.raises(CommandError, match="mapping"):
        parse_service(["name", "web"])
    with pytest.raises(ValueError, match="bad service spec"):
        ServiceSpec.from_wire({"name": "web"})


def test_same_tasks_ignores_count_and_policies() -> None:
    a = parse_service({"name": "w", "command": "x"})
    assert a.same_tasks(parse_service({"name": "w", "command": "x", "instances": 4, "upgrade": {"max_parallel": 2}}))
    assert not a.same_tasks(parse_service({"name": "w", "command": "y"}))
    assert not a.same_tasks(parse_service({"name": "w", "command": "x", "env": {"A": 1}}))


def test_a_role_is_an_optional_role_name() -> None:
    from broker_mesos.framework.planning import CommandError
    from broker_mesos.framework.services.spec import parse_service

    assert parse_service({"name": "a", "command": "x"}).role == ""
    spec = parse_service({"name": "a", "command": "x", "role": "web.prod"})
    assert spec.role == "web.prod" and parse_service(spec.to_wire()) == spec
    with pytest.raises(CommandError, match="role"):
        parse_service({"name": "a", "command": "x", "role": "-bad role"})
