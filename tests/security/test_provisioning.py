"""``bmesos principals`` against a real RabbitMQ node with the management plugin: from nothing, init
makes the vhost, the master, an operator and the topology; add / list / rotate / remove manage the
other principals; what it grants is exactly ``core.security.permissions``, checked through the HTTP
API and by connecting over AMQP with the URLs it hands out.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from broker_mesos.bus import provision, topology
from broker_mesos.core import security
from broker_mesos.testing.pytest_plugin import remove_principals
from broker_mesos.testing.rabbit import RabbitNode, free_port

_vhosts = itertools.count()


@dataclass
class Cli:
    node: RabbitNode
    vhost: str
    api: provision.ManagementApi
    env: dict[str, str]

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "principals", "--vhost", self.vhost,
                               *args], capture_output=True, text=True, timeout=60, env=self.env)
        assert "Traceback" not in done.stderr + done.stdout
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def get(self, path: str) -> Any:
        return self.api.request("GET", path, missing_ok=True)


@pytest.fixture
def cli(secure_rabbit: RabbitNode) -> Iterator[Cli]:
    vhost = f"prov{next(_vhosts)}"
    env = {**os.environ, "BMESOS_ADMIN_URL": secure_rabbit.management_url(),
           "BMESOS_AMQP_URL_BASE": f"amqp://127.0.0.1:{secure_rabbit.port}"}
    env.pop("BMESOS_BROKER", None)
    try:
        yield Cli(secure_rabbit, vhost, provision.ManagementApi(secure_rabbit.management_url()), env)
    finally:
        remove_principals(secure_rabbit, vhost)


def lines(out: str) -> dict[str, str]:
    """``<user> <rest>`` lines as a dict."""
    return dict(line.split(" ", 1) for line in out.splitlines())


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url + "?connection_attempts=1&socket_timeout=5"))


def can_connect(url: str) -> bool:
    try:
        connect(url).close()
    except pika.exceptions.ProbableAuthenticationError:
        return False
    return True


def assert_granted(cli: Cli, who: security.Principal) -> None:
    """The user's permissions and topic permissions in the vhost are exactly ``security.permissions``."""
    want = security.permissions(who)
    got = cli.get(f"permissions/{cli.vhost}/{quote(who.user)}")
    assert (got["configure"], got["write"], got["read"]) == (want.configure, want.write, want.read)
    topic = {t["exchange"]: (t["write"], t["read"]) for t in cli.get(f"topic-permissions/{cli.vhost}/{who.user}")}
    assert topic == want.topic


def assert_closed(conn: pika.BlockingConnection, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.process_data_events(time_limit=0.2)
        except pika.exceptions.ConnectionClosedByBroker as exc:
            assert exc.reply_code == 320  # CONNECTION_FORCED
            return
    raise AssertionError("the broker did not close the connection")


def test_init_from_nothing_is_complete_and_idempotent(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "creds"
    assert cli.get(f"vhosts/{cli.vhost}") is None
    first = lines(cli("init", "--output-dir", str(out)).stdout)
    assert first == {"master": str(out / "master.url"), "operator.admin": str(out / "operator.admin.url")}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    urls = {}
    for user, path in first.items():
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        urls[user] = Path(path).read_text().strip()
        assert urls[user].startswith(f"amqp://{user}:")
        assert urls[user].endswith(f"@127.0.0.1:{cli.node.port}/{cli.vhost}")
        assert can_connect(urls[user])
    assert_granted(cli, security.Principal(security.Kind.MASTER, "master"))
    assert_granted(cli, security.principal("operator", "admin"))
    assert cli.get("users/operator.admin")["limits"] == {"max-connections": 8, "max-channels": 64}
    # the vhost: limited, and no permissions left for the admin user that created it
    assert cli.get(f"vhost-limits/{cli.vhost}") == [{"vhost": cli.vhost, "value": {"max-queues": 10_000}}]
    assert {p["user"] for p in cli.get(f"vhosts/{cli.vhost}/permissions")} == {"master", "operator.admin"}
    # the topology, with its arguments and bindings
    assert provision.Provisioner(cli.api, cli.vhost).missing_topology() == []
    calls = cli.get(f"queues/{cli.vhost}/{topology.MASTER_CALLS_QUEUE}")
    assert calls["arguments"] == {**topology.QUORUM, **topology.DEAD_LETTERED} and calls["durable"]
    registry = cli.get(f"queues/{cli.vhost}/{topology.MASTER_REGISTRY_QUEUE}")
    assert registry["arguments"] == topology.master_registry_queue().arguments
    assert {e["name"]: e["type"] for e in cli.get(f"exchanges/{cli.vhost}") if e["name"] in
            {x.name for x in topology.EXCHANGES}} == {x.name: x.type for x in topology.EXCHANGES}
    # again: same passwords (the master's from its file, to declare the topology again)
    again = cli("init", "--output-dir", str(out))
    assert lines(again.stdout) == first and "declared" in again.stderr
    assert {u: Path(p).read_text().strip() for u, p in first.items()} == urls
    # again, printing: passwords kept and not known, topology checked through the API
    printed = lines(cli("init").stdout)
    assert printed.keys() == {"master", "operator.admin"}
    assert all("exists; password kept" in rest for rest in printed.values())
    assert can_connect(urls["master"]) and can_connect(urls["operator.admin"])
    # --rotate: new passwords, the old ones refused
    rotated = lines(cli("init", "--rotate").stdout)
    assert not can_connect(urls["master"]) and not can_connect(urls["operator.admin"])
    assert all(can_connect(url) for url in rotated.values())


def test_add_list_rotate_remove(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "creds"
    cli("init", "--output-dir", str(out))
    added = lines(cli("add", "agent", "a1", "--output-dir", str(out)).stdout)
    assert added == {"agent.a1": str(out / "agent.a1.url")}
    assert stat.S_IMODE((out / "agent.a1.url").stat().st_mode) == 0o600
    a1_url = (out / "agent.a1.url").read_text().strip()
    framework = cli("add", "framework", "alice", "--roles", "prod,batch", "--output-dir", str(out))
    assert "roles prod,batch" in framework.stderr
    monitor = lines(cli("add", "monitor", "mon").stdout)  # no --output-dir: the URL is printed
    mon_url = monitor["monitor.mon"]
    assert can_connect(mon_url) and can_connect(a1_url)

    for who in (security.principal("agent", "a1"), security.principal("framework", "alice"),
                security.principal("monitor", "mon")):
        assert_granted(cli, who)
    assert cli.get("users/agent.a1")["limits"] == {"max-connections": 4, "max-channels": 64}
    assert cli.get("users/framework.alice")["limits"] == {"max-connections": 8, "max-channels": 256}
    assert sorted(cli.get("users/framework.alice")["tags"]) == ["bmesos-role:batch", "bmesos-role:prod"]
    # the agent's queue exists and is bound, so tasks sent before the agent first connects wait in it
    tasks = cli.get(f"queues/{cli.vhost}/tasks.a1")
    assert tasks["arguments"] == topology.agent_tasks_queue("a1").arguments
    bindings = cli.get(f"bindings/{cli.vhost}/e/tasks/q/tasks.a1")
    assert [b["routing_key"] for b in bindings] == ["a1"]

    # an existing user is refused without --rotate
    again = cli("add", "agent", "a1", ok=False)
    assert again.returncode == 2 and again.stderr.splitlines() == [
        "Error: user agent.a1 exists: `bmesos principals rotate agent a1` gives it a new password (or add --rotate)"]
    assert can_connect(a1_url)

    listed = lines(cli("list").stdout)
    assert listed.keys() == {"master", "operator.admin", "agent.a1", "framework.alice", "monitor.mon"}
    assert all(rest.endswith("perms=as-provisioned") for rest in listed.values())
    assert "kind=framework name=alice roles=batch,prod limits=max-channels=256,max-connections=8" \
        in listed["framework.alice"]
    records = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    agent = next(r for r in records if r["user"] == "agent.a1")
    assert agent["permissions"]["configure"] == security.permissions(security.principal("agent", "a1")).configure
    assert all(r["as_provisioned"] for r in records)

    # rotate: a new URL in the file, the old password refused; --close-connections ends open ones
    alice_url = (out / "framework.alice.url").read_text().strip()
    alice_conn = connect(alice_url)
    assert lines(cli("rotate", "framework", "alice", "--close-connections", "--output-dir", str(out)).stdout) \
        == {"framework.alice": str(out / "framework.alice.url")}
    new_alice = (out / "framework.alice.url").read_text().strip()
    assert new_alice != alice_url and not can_connect(alice_url) and can_connect(new_alice)
    assert_closed(alice_conn)
    assert sorted(cli.get("users/framework.alice")["tags"]) == ["bmesos-role:batch", "bmesos-role:prod"]
    assert_granted(cli, security.principal("framework", "alice"))

    # remove: the user goes, and its open connections with it
    a1_conn = connect(a1_url)
    assert cli("remove", "agent", "a1").stdout.strip() == "removed agent.a1"
    assert cli.get("users/agent.a1") is None
    assert_closed(a1_conn)
    assert not can_connect(a1_url)
    assert "agent.a1" not in lines(cli("list").stdout)
    gone = cli("remove", "agent", "a1", ok=False)
    assert gone.returncode == 2 and gone.stderr.strip() == "Error: no user agent.a1"


def test_framework_principals_may_not_share_framework_ids(cli: Cli) -> None:
    cli("init")
    cli("add", "framework", "alice")
    for name in ("alice-x", "al"):
        cli("add", "framework", name, ok=name == "al")
    clash = cli("add", "framework", "al-ice", ok=False)
    assert clash.returncode == 2 and "would share framework ids with framework.al" in clash.stderr


def test_a_principal_of_another_cluster_is_refused(cli: Cli) -> None:
    cli("init")
    other = Cli(cli.node, cli.vhost + "b", cli.api, cli.env)
    try:
        clash = other("init", ok=False)
        assert clash.returncode == 2
        assert clash.stderr.splitlines() == [
            f"Error: user master already exists and reaches vhost(s) {cli.vhost}: RabbitMQ user names are "
            "broker-wide, so this cluster needs another name for it"]
        lines(other("--master-principal", "master-b", "init", "--operator", "admin-b").stdout)
        assert provision.Provisioner(cli.api, other.vhost).missing_topology() == []
    finally:
        cli.api.request("DELETE", f"vhosts/{other.vhost}", missing_ok=True)


def test_errors_are_one_line(cli: Cli) -> None:
    def error(*args: str, env: dict[str, str] | None = None) -> str:
        done = Cli(cli.node, cli.vhost, cli.api, {**cli.env, **(env or {})})(*args, ok=False)
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.splitlines()) == 1, done.stderr
        return done.stderr.strip()

    port = free_port()
    assert error("list", env={"BMESOS_ADMIN_URL": f"http://guest:guest@127.0.0.1:{port}"}) == \
        f"Error: cannot reach the RabbitMQ management API at http://127.0.0.1:{port}: connection refused"
    assert error("init", env={"BMESOS_ADMIN_URL": cli.node.management_url().replace("guest@", "wrong@")}) == \
        f"Error: the management API at http://127.0.0.1:{cli.node.management_port} refused the admin " \
        "credentials of user 'guest' (check --admin-url or $BMESOS_ADMIN_URL)"
    assert error("list") == f"Error: no vhost {cli.vhost} (run `bmesos principals init` first)"
    cli("init")
    assert error("add", "agent", "no.dots") == \
        "Error: principal name 'no.dots' is not an identifier (1-128 of A-Z a-z 0-9 _ -)"
    assert error("add", "monitor", "m", "--roles", "x") == "Error: --roles is for framework principals"
    assert error("add", "framework", "f", "--roles", "bad role") == \
        "Error: role 'bad role' is not a role name ('*', or 1-128 of A-Z a-z 0-9 _ . -)"
    assert error("rotate", "agent", "nobody") == f"Error: no principal agent.nobody in vhost {cli.vhost}"
    port = free_port()
    assert error("--amqp-port", str(port), "add", "agent", "a9") == \
        f"Error: cannot connect to the broker at amqp://agent.a9:***@127.0.0.1:{port}/{cli.vhost}: connection refused"
    assert cli.get("users/agent.a9") is None  # all or nothing


def test_init_grants_again_what_drifted(cli: Cli) -> None:
    """After an upgrade (or a hand edit), `init` gives every principal of the vhost what this version says."""
    cli("init")
    cli("add", "monitor", "mon")
    cli.api.request("PUT", f"permissions/{cli.vhost}/monitor.mon", {"configure": ".*", "write": ".*", "read": ".*"})
    cli.api.request("DELETE", f"topic-permissions/{cli.vhost}/monitor.mon")
    assert lines(cli("list").stdout)["monitor.mon"].endswith("perms=DIFFERENT (see --json)")
    assert "granted 1 more principals" in cli("init").stderr
    assert lines(cli("list").stdout)["monitor.mon"].endswith("perms=as-provisioned")
    assert_granted(cli, security.principal("monitor", "mon"))
    # a user that is no principal (the admin, given access by hand) is shown for what it is
    cli.api.request("PUT", f"permissions/{cli.vhost}/guest", {"configure": ".*", "write": ".*", "read": "^$"})
    assert lines(cli("list").stdout)["guest"] == \
        "kind=- name=- roles=- limits=- perms=NOT-A-PRINCIPAL configure=.* write=.* read=^$"
