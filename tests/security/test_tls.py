"""TLS to the broker and credentials kept off command lines (bus/tls.py, cli/common.py ``broker_options``).

A private RabbitMQ node with a TLS listener whose certificates the harness made with ``openssl``
(``RabbitNode(..., tls=True)``): a master, an agent and ``bmesos run`` work over ``amqps://``; a client
that trusts another CA, or reaches the broker under a name its certificate does not carry, or shows a
client certificate the broker does not trust, is refused in one line; ``--broker-file`` gives the URL
without a command line, and a password on the command line is warned about.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_mesos.bus.connection import _describe, _redact
from broker_mesos.bus.tls import TlsError, TlsOptions, check_urls, connection_parameters, describe_ssl_text
from broker_mesos.cli.common import DEFAULT_BROKER, BrokerSettingsError, read_broker_file, resolve_broker
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode, TlsFiles

PS_WARNING = "the broker password given with --broker is visible to every local user in `ps`"
# the master accepts the guest user only in development mode; harmless where that mode does not exist
DEV_MASTER = {"BMESOS_INSECURE": "1"}


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path_factory.mktemp("rabbit-tls"), vhosts=16, tls=True)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def tls_url(tls_node: RabbitNode) -> str:
    return tls_node.tls_url(tls_node.fresh_vhost())


@pytest.fixture
def certs(tls_node: RabbitNode) -> TlsFiles:
    assert tls_node.tls_files is not None
    return tls_node.tls_files


def broker_file(path: Path, url: str, mode: int = 0o600) -> str:
    path.write_text(f"# the broker of the test cluster\n\n{url}\n")
    path.chmod(mode)
    return str(path)


def bmesos(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BMESOS_")}
    return subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})})


def test_a_cluster_works_over_tls(tls_node: RabbitNode, tls_url: str, certs: TlsFiles, procs: ProcessGroup,
                                  tmp_path: Path) -> None:
    vhost = tls_url.rsplit("/", 1)[1]
    shown = f"amqps://127.0.0.1:{tls_node.tls_port}/{vhost}"
    # the URL on the command line (guest's well-known password: no warning; a secret one warns, below)
    master = procs.bmesos("master", "master", "--broker", tls_url, "--tls-ca", str(certs.ca),
                          "--allocation-interval", "0.1", env=DEV_MASTER)
    master.wait_output(r"master \S+ serving")
    assert f"connected to {shown}" in master.output()
    assert PS_WARNING not in master.output()
    # everything from the environment, with a client certificate (the broker verifies it)
    agent = procs.bmesos("agent", "agent", "--id", "a1", "--resources", "cpus:4;mem:4096", "--executor", "noop",
                         "--work-dir", str(tmp_path / "a1"), "--heartbeat-interval", "1",
                         env={"BMESOS_BROKER": tls_url, "BMESOS_TLS_CA": str(certs.ca),
                              "BMESOS_TLS_CERT": str(certs.client_cert), "BMESOS_TLS_KEY": str(certs.client_key)})
    agent.wait_output(r"agent a1 registered")
    # the URL from a file only its owner reads
    url_file = broker_file(tmp_path / "broker.url", tls_url)
    run = procs.bmesos("run", "run", "--broker-file", url_file, "--tls-ca", str(certs.ca), "--count", "2",
                       "--", "true")
    assert run.wait(30) == 0, run.output()
    assert "2 finished, 0 failed, 0 killed/lost" in run.output()
    for proc in (master, agent, run):
        assert "guest:guest" not in proc.output()  # never a password in a log line
    for proc in (agent, run):
        assert PS_WARNING not in proc.output() and "Traceback" not in proc.output()


def test_a_broker_signed_by_another_ca_is_refused_in_one_line(tls_url: str, certs: TlsFiles,
                                                               tmp_path: Path) -> None:
    url_file = broker_file(tmp_path / "broker.url", tls_url)
    shown = re.escape(_redact(tls_url))
    watch = bmesos("watch", "--broker-file", url_file, "--tls-ca", str(certs.other_ca), "--connect-timeout", "1")
    assert watch.returncode == 2, watch.stderr
    assert re.fullmatch(rf"Error: cannot connect to the broker at {shown}: certificate verify failed: "
                        r"[^\n]*certificate[^\n]*\n", watch.stderr), watch.stderr
    admin = bmesos("admin", "allocator", "show", "--tls-ca", str(certs.other_ca), "--connect-timeout", "1",
                   env={"BMESOS_BROKER_FILE": url_file})
    assert admin.returncode == 2, admin.stderr
    errors = [line for line in admin.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "certificate verify failed" in errors[0], admin.stderr
    assert "Traceback" not in admin.stderr + watch.stderr


def test_the_host_name_is_checked_and_the_escape_hatch_is_logged(tls_node: RabbitNode, tls_url: str,
                                                                certs: TlsFiles, tmp_path: Path) -> None:
    # 127.1 reaches the same listener, but the certificate names only localhost and 127.0.0.1
    other_name = broker_file(tmp_path / "broker.url", tls_url.replace("@127.0.0.1:", "@127.1:"))
    refused = bmesos("watch", "--broker-file", other_name, "--tls-ca", str(certs.ca), "--connect-timeout", "1")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"Error: cannot connect to the broker at amqps://127.1:{tls_node.tls_port}/{tls_url.rsplit('/', 1)[1]}: "
        "certificate verify failed: Hostname mismatch, certificate is not valid for '127.1'."]
    accepted = bmesos("admin", "allocator", "show", "--broker-file", other_name, "--tls-ca", str(certs.ca),
                      "--tls-no-verify-hostname", "--timeout", "0.5", "--log-level", "info")
    assert "--tls-no-verify-hostname: the broker's certificate is checked against the CA but not" in accepted.stderr
    assert f"admin: connected to amqps://127.1:{tls_node.tls_port}/" in accepted.stderr, accepted.stderr
    assert "no answer from the master" in accepted.stderr  # connected: nobody serves this vhost


def test_a_client_certificate_the_broker_does_not_trust_is_refused(tls_url: str, certs: TlsFiles,
                                                                   tmp_path: Path) -> None:
    result = bmesos("watch", "--broker-file", broker_file(tmp_path / "broker.url", tls_url),
                    "--tls-ca", str(certs.ca), "--tls-cert", str(certs.other_ca), "--tls-key", str(certs.other_ca_key),
                    "--connect-timeout", "1")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "the broker refused the TLS connection (" in lines[0], result.stderr
    assert "check --tls-cert and --tls-key" in lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-ca", "{ca}"], "TLS options were given but the broker URL is not amqps://"),
    (["--broker", "{url},amqp://u:p@127.0.0.1:1/"], "the broker URLs mix amqp:// and amqps://"),
    (["--broker", "{url}", "--tls-key", "{ca}"], "a TLS key needs its certificate (--tls-cert)"),
    (["--broker", "{url}", "--tls-ca", "{key}"], "cannot load the TLS CA file"),
    (["--broker", "{url}", "--broker-file", "{ca}"], "--broker and --broker-file are both given"),
    (["--broker-file", "{missing}"], "cannot read the broker file"),
])
def test_unusable_broker_options_are_a_usage_error(args: list[str], message: str, tls_url: str, certs: TlsFiles,
                                                   tmp_path: Path) -> None:
    values = {"ca": str(certs.ca), "key": str(certs.client_key), "url": tls_url, "missing": str(tmp_path / "no")}
    result = bmesos("watch", *[a.format(**values) for a in args])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "p@" not in result.stderr


# -- the pieces, without a broker ----------------------------------------------------------------------------


def test_broker_file_takes_the_first_url_and_warns_when_others_can_read_it(tmp_path: Path) -> None:
    private = broker_file(tmp_path / "private.url", "amqps://u:secret@h:5671/v")
    assert read_broker_file(private) == ("amqps://u:secret@h:5671/v", [])
    shared = broker_file(tmp_path / "shared.url", "amqp://u:secret@h/", mode=0o644)
    url, warnings = read_broker_file(shared)
    assert url == "amqp://u:secret@h/"
    assert warnings == [f"the broker file {shared} is accessible to other users (mode 0644); it holds the broker "
                        f"password: chmod 600 {shared}"]
    empty = tmp_path / "empty.url"
    empty.write_text("# nothing\n\n")
    with pytest.raises(BrokerSettingsError, match="holds no URL"):
        read_broker_file(empty)


def test_where_the_broker_url_comes_from(tmp_path: Path) -> None:
    f = broker_file(tmp_path / "b.url", "amqp://u:from-file@h/")
    assert resolve_broker(None, False, None, False)[0] == DEFAULT_BROKER  # nothing given: the documented default
    assert resolve_broker("amqp://u:env@h/", False, None, False) == ("amqp://u:env@h/", [])  # $BMESOS_BROKER
    assert resolve_broker("amqp://u:env@h/", False, f, True)[0] == "amqp://u:from-file@h/"  # --broker-file wins
    url, warnings = resolve_broker("amqp://u:s3cr3t@h/", True, f, False)  # --broker beats $BMESOS_BROKER_FILE
    assert url == "amqp://u:s3cr3t@h/" and len(warnings) == 1 and warnings[0].startswith(PS_WARNING)
    assert resolve_broker("amqp://guest:guest@h/", True, None, False)[1] == []  # no secret to leak
    assert "s3cr3t" not in warnings[0]
    assert resolve_broker("amqp://h/", True, None, False) == ("amqp://h/", [])  # no password, no warning
    with pytest.raises(BrokerSettingsError, match=r"\$BMESOS_BROKER and \$BMESOS_BROKER_FILE"):
        resolve_broker("amqp://u:env@h/", False, f, False)


def test_tls_parameters_verify_the_broker(certs: TlsFiles) -> None:
    params = connection_parameters("amqps://u:p@127.0.0.1/v", TlsOptions(ca=str(certs.ca)))
    assert params.port == 5671 and params.ssl_options is not None
    context = params.ssl_options.context
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert params.ssl_options.server_hostname == "127.0.0.1"
    relaxed = connection_parameters("amqps://h/", TlsOptions(ca=str(certs.ca), verify_hostname=False))
    assert relaxed.ssl_options is not None and relaxed.ssl_options.context.verify_mode is ssl.CERT_REQUIRED
    assert not relaxed.ssl_options.context.check_hostname
    default = connection_parameters("amqps://h/", None)  # the system's CAs
    assert default.ssl_options is not None and default.ssl_options.context.verify_mode is ssl.CERT_REQUIRED
    assert connection_parameters("amqp://h/", TlsOptions(ca=str(certs.ca))).ssl_options is None
    with pytest.raises(TlsError):
        check_urls(["amqp://h/"], TlsOptions())
    check_urls(["amqps://a/", "amqps://b/"], TlsOptions())
    with pytest.raises(TlsError, match="encrypted"):
        encrypted = certs.client_key.parent / "encrypted.key"
        subprocess.run(["openssl", "pkey", "-in", str(certs.client_key), "-aes256", "-passout", "pass:x",
                        "-out", str(encrypted)], check=True, capture_output=True)
        TlsOptions(cert=str(certs.client_cert), key=str(encrypted)).context()  # refused, never a prompt


def test_tls_failures_read_as_one_short_reason() -> None:
    assert _redact("amqps://u:secret@h:5999/v") == "amqps://h:5999/v"
    assert _redact("amqp://u:secret@h/") == "amqp://h:5672/"
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    assert _describe(verify) == "certificate verify failed: unable to get local issuer certificate"
    lost = ("StreamLostError: (\"Stream connection lost: SSLError(1, '[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert "
            "unknown ca (_ssl.c:2580)')\",)")
    assert describe_ssl_text(lost) == ("the broker refused the TLS connection (tlsv1 alert unknown ca): check "
                                       "--tls-cert and --tls-key")
    assert describe_ssl_text("connection refused") is None


def test_a_broker_hanging_up_mid_handshake_reads_as_a_refused_certificate() -> None:
    """A busy broker may close the connection instead of sending its alert (seen under load)."""
    from broker_mesos.bus.tls import describe_ssl_text

    text = ("IncompatibleProtocolError: StreamLostError: (\"Stream connection lost: "
            "SSLEOFError(8, 'EOF occurred in violation of protocol (_ssl.c:2427)')\",)")
    assert describe_ssl_text(text) == ("the broker refused the TLS connection (it closed it during the handshake): "
                                       "check --tls-cert and --tls-key")
    assert describe_ssl_text("connection refused") is None
