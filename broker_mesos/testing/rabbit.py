"""A private RabbitMQ node for tests: its own node name, ports, data directory and vhosts.

``RabbitNode(dir).start()`` runs Debian's ``rabbitmq-server`` as a child process; ``stop()`` shuts it
down, ``kill()`` SIGKILLs it (for fault tests) and ``start()`` again brings it back on the same ports
and data. The node boots with a pool of vhosts (``t0``...) so every test gets a fresh, isolated one
without paying for ``rabbitmqctl`` calls.

``RabbitCluster(dir, size=3).start()`` runs several such nodes on this machine that share an Erlang
cookie and join the first one (``rabbitmqctl join_cluster``); ``url(vhost)`` lists every node,
comma-separated, which is what ``Bus`` accepts to fail over between them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from broker_mesos.testing.wait import wait_for

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
CLUSTER_COOKIE = "BMESOSTESTCLUSTERCOOKIE"
BOOT_TIMEOUT = 90.0
VHOST_POOL = 250  # one per test that uses the session node (about 130 now): room to grow


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process: several nodes' AMQP and
    distribution ports are chosen before any of them binds, so the OS's answer alone could repeat."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass(frozen=True)
class TlsFiles:
    """Test certificates (PEM) made by ``make_test_certificates``: a CA, a server certificate for 127.0.0.1 and
    localhost signed by it, a client certificate signed by it, and an unrelated CA that signed nothing here."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_ca_key: Path  # with other_ca as its certificate: a client certificate the broker does not trust


def make_test_certificates(directory: str | os.PathLike[str]) -> TlsFiles:
    """Generate ``TlsFiles`` in ``directory`` with the ``openssl`` command line (kept if already there:
    a restarted node serves the same certificates). EC P-256 keys, valid for two days."""
    d = Path(directory)
    files = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
                     d / "other-ca.pem", d / "other-ca.key")
    if all(Path(f).exists() for f in vars(files).values()):
        return files
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is not installed (Debian: apt-get install openssl)")
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stdout}{done.stderr}")

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name, subject in (("ca", "/CN=bmesos test CA"), ("other-ca", "/CN=bmesos unrelated test CA")):
        run("req", "-x509", *key, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", subject,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, subject, usage in (("server", "/CN=localhost", "serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1"),
                                 ("client", "/CN=bmesos-test-client", "clientAuth")):
        (d / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n"
            f"authorityKeyIdentifier=keyid,issuer\nextendedKeyUsage={usage}\n")
        run("req", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    for path in d.glob("*.key"):
        path.chmod(0o600)
    return files


def rabbitmq_available() -> bool:
    return Path(RABBITMQ_SERVER).exists() or shutil.which("rabbitmq-server") is not None


class RabbitNode:
    """One RabbitMQ node under ``base_dir``, reachable at ``url(vhost)``."""

    def __init__(self, base_dir: str | os.PathLike[str], name: str | None = None, vhosts: int = VHOST_POOL,
                 cookie: str | None = None, management: bool = False, tls: bool = False) -> None:
        self.base_dir = Path(base_dir)
        self.cookie = cookie
        # opt-in: a TLS listener on its own port, with certificates made under base_dir/tls (``tls_files``)
        self.tls_port = free_port() if tls else None
        self.tls_files = make_test_certificates(self.base_dir / "tls") if tls else None
        # opt-in: the management plugin (HTTP API, `bmesos principals`) costs boot time and memory
        self.management = management
        self.management_port = free_port() if management else None
        self.name = name or f"bmesos{os.getpid()}x{free_port()}"
        self.port = free_port()
        self.dist_port = free_port()
        self.vhosts = [f"t{i}" for i in range(vhosts)]
        self._next_vhost = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    def url(self, vhost: str = "/") -> str:
        quoted = "%2F" if vhost == "/" else vhost
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quoted}"

    def tls_url(self, vhost: str = "/") -> str:
        """The ``amqps://`` URL of the TLS listener (``RabbitNode(..., tls=True)`` only); its certificate is
        for 127.0.0.1 and localhost, signed by ``tls_files.ca``."""
        if self.tls_port is None:
            raise RuntimeError("this node runs without TLS: RabbitNode(..., tls=True)")
        quoted = "%2F" if vhost == "/" else vhost
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/{quoted}"

    def management_url(self) -> str:
        """The HTTP management API as guest (``RabbitNode(..., management=True)`` only)."""
        if self.management_port is None:
            raise RuntimeError("this node runs without the management plugin: RabbitNode(..., management=True)")
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def fresh_vhost(self) -> str:
        """A vhost no earlier caller has been given: one per test keeps tests independent."""
        if self._next_vhost >= len(self.vhosts):
            raise RuntimeError("the node's vhost pool is used up; start it with more vhosts")
        vhost = self.vhosts[self._next_vhost]
        self._next_vhost += 1
        return vhost

    def _write_config(self) -> dict[str, str]:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        defs = {
            "users": [{"name": "guest", "password": "guest", "tags": ["administrator"]}],
            "vhosts": [{"name": "/"}] + [{"name": v} for v in self.vhosts],
            "permissions": [{"user": "guest", "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                            for v in ["/", *self.vhosts]],
        }
        (self.base_dir / "definitions.json").write_text(json.dumps(defs))
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"load_definitions = {self.base_dir / 'definitions.json'}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            "disk_free_limit.absolute = 50MB\n")
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        if self.management:
            (self.base_dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
            with (self.base_dir / "rabbitmq.conf").open("a") as conf:
                conf.write(f"management.tcp.port = {self.management_port}\nmanagement.tcp.ip = 127.0.0.1\n")
        if self.tls_files is not None:  # peer certificates are checked if sent, not required
            with (self.base_dir / "rabbitmq.conf").open("a") as conf:
                conf.write(f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}\n"
                           f"ssl_options.cacertfile = {self.tls_files.ca}\n"
                           f"ssl_options.certfile = {self.tls_files.server_cert}\n"
                           f"ssl_options.keyfile = {self.tls_files.server_key}\n"
                           "ssl_options.verify = verify_peer\n"
                           "ssl_options.fail_if_no_peer_cert = false\n")
        (self.base_dir / "env.conf").write_text("")
        if self.cookie is not None:
            cookie = self.base_dir / ".erlang.cookie"
            if not cookie.exists():
                cookie.write_text(self.cookie)
                cookie.chmod(0o400)
        return {
            **os.environ,
            "HOME": str(self.base_dir),
            "RABBITMQ_CONF_ENV_FILE": str(self.base_dir / "env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base_dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base_dir / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout: float = BOOT_TIMEOUT) -> RabbitNode:
        """Start the node and return once it accepts AMQP connections."""
        if not rabbitmq_available():
            raise RuntimeError("rabbitmq-server is not installed: run scripts/test, which installs it")
        env = self._write_config()
        server = RABBITMQ_SERVER if Path(RABBITMQ_SERVER).exists() else shutil.which("rabbitmq-server")
        out = open(self.base_dir / "server.out", "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen([str(server)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        wait_for(self._accepts_amqp, timeout, f"RabbitMQ node {self.node} to accept connections "
                 f"(log: {self.base_dir / 'server.out'})", interval=0.2, abort=self._died)
        if self.management:
            wait_for(self._answers_http, timeout, f"RabbitMQ node {self.node}'s management API to answer "
                     f"(log: {self.base_dir / 'server.out'})", interval=0.2, abort=self._died)
        if self.tls_files is not None:
            wait_for(self._accepts_amqps, timeout, f"RabbitMQ node {self.node} to accept TLS connections "
                     f"(log: {self.base_dir / 'server.out'})", interval=0.2, abort=self._died)
        return self

    def _died(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            tail = (self.base_dir / "server.out").read_text(errors="replace")[-2000:]
            return f"rabbitmq-server exited with {self.process.returncode}:\n{tail}"
        return None

    def _accepts_amqp(self) -> bool:
        import pika

        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url() + "?socket_timeout=2&connection_attempts=1"))
        except Exception:  # any failure means "not yet"
            return False
        conn.close()
        return True

    def _accepts_amqps(self) -> bool:
        import pika

        from broker_mesos.bus.tls import TlsOptions, connection_parameters

        assert self.tls_files is not None
        params = connection_parameters(self.tls_url(), TlsOptions(ca=str(self.tls_files.ca)))
        params.socket_timeout = 2
        params.connection_attempts = 1
        try:
            conn = pika.BlockingConnection(params)
        except Exception:  # any failure means "not yet"
            return False
        conn.close()
        return True

    def _answers_http(self) -> bool:
        import base64
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.management_port}/api/overview", headers={
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=2) as answer:
                return bool(answer.status == 200)
        except Exception:  # any failure means "not yet"
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the node down cleanly (SIGTERM), SIGKILL if it takes longer than ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the node and everything it started: a crash, for fault tests."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <this node> ARGS`` (with this node's cookie) and return its output."""
        env = {**os.environ, "HOME": str(self.base_dir), "RABBITMQ_CONF_ENV_FILE": str(self.base_dir / "env.conf")}
        done = subprocess.run([RABBITMQCTL, "-n", self.node, *args], env=env, capture_output=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node} failed: "
                               f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RabbitCluster:
    """``size`` RabbitMQ nodes on this machine forming one cluster (quorum queues replicate across them)."""

    def __init__(self, base_dir: str | os.PathLike[str], size: int = 3, vhosts: int = 4) -> None:
        base = Path(base_dir)
        stem = f"bmc{os.getpid()}x{free_port()}"
        self.nodes = [RabbitNode(base / f"node{i}", f"{stem}n{i}", vhosts, cookie=CLUSTER_COOKIE)
                      for i in range(size)]
        self._next_vhost = 0

    def start(self) -> RabbitCluster:
        """Boot every node, then join the others to the first one."""
        first, *others = self.nodes
        first.start()
        for node in others:
            node.start()
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
            wait_for(node._accepts_amqp, BOOT_TIMEOUT, f"{node.node} to serve after joining the cluster")
        running = first.ctl("cluster_status", "--formatter", "json")
        missing = [n.node for n in self.nodes if n.node not in json.loads(running).get("running_nodes", [])]
        if missing:
            raise RuntimeError(f"nodes {missing} did not join the cluster: {running}")
        return self

    def fresh_vhost(self) -> str:
        vhost = self.nodes[0].vhosts[self._next_vhost]
        self._next_vhost += 1
        return vhost

    def url(self, vhost: str = "/") -> str:
        """Every node's URL, comma-separated (what ``--broker`` and ``Bus`` accept)."""
        return ",".join(node.url(vhost) for node in self.nodes)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()


def wait_closed(port: int, timeout: float = 10.0) -> None:
    def closed() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0

    wait_for(closed, timeout, f"port {port} to close")


