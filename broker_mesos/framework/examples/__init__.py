"""Example frameworks on the scheduler SDK: ``reference`` (Mesos' documented offer flow) and ``sleeper``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from types import FrameType

from broker_mesos.bus.tls import TlsError, TlsOptions
from broker_mesos.cli.common import (  # the commands' logging: wire text escaped
    BROKER_ENV,
    BROKER_FILE_ENV,
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
    BrokerSettingsError,
    resolve_broker,
    setup_logging,
    tls_settings,
)
from broker_mesos.framework.driver import SchedulerDriver

__all__ = ["broker_settings", "common_arguments", "emit", "serve", "setup_logging"]

POLL = 0.2


def emit(line: str) -> None:
    """One output line, flushed at once: these lines are what people and tests read."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--broker", default=None,
                        help=f"AMQP URL of RabbitMQ, amqps:// for TLS (or ${BROKER_ENV}; a password here shows in "
                             f"`ps`: use --broker-file)")
    parser.add_argument("--broker-file", metavar="FILE",
                        help=f"read the broker URL from FILE, its first non-comment line; mode 0600 "
                             f"(or ${BROKER_FILE_ENV})")
    parser.add_argument("--tls-ca", metavar="FILE", help=f"CA that signed the broker's certificate (or ${TLS_CA_ENV})")
    parser.add_argument("--tls-cert", metavar="FILE", help=f"client certificate, PEM (or ${TLS_CERT_ENV})")
    parser.add_argument("--tls-key", metavar="FILE", help=f"client key, PEM, unencrypted (or ${TLS_KEY_ENV})")
    parser.add_argument("--tls-no-verify-hostname", action="store_true",
                        help="accept any certificate the CA signed, whatever host it names (logged)")
    parser.add_argument("--framework-id", default=None, help="framework id (default: <name>-<8 hex>)")
    parser.add_argument("--name", default=name, help="framework name")
    parser.add_argument("--role", default="*", help="the framework's role")
    parser.add_argument("--connect-timeout", type=float, default=15.0, help="seconds to reach the broker")
    parser.add_argument("--no-teardown", action="store_true",
                        help="on exit, leave the framework and its tasks to the master instead of TEARDOWN")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def broker_settings(args: argparse.Namespace) -> tuple[str, TlsOptions | None]:
    """The broker URL(s) and TLS options from ``common_arguments`` (as ``bmesos`` commands resolve them:
    --broker, else --broker-file, else $BMESOS_BROKER_FILE or $BMESOS_BROKER); warnings are logged, an
    unusable setting is one line on stderr and exit status 2. Call after ``setup_logging``."""
    def given(value: str | None, env: str) -> str | None:
        return value if value is not None else os.environ.get(env) or None

    try:
        broker, warnings = resolve_broker(given(args.broker, BROKER_ENV), args.broker is not None,
                                          given(args.broker_file, BROKER_FILE_ENV), args.broker_file is not None)
        tls, tls_warnings = tls_settings(broker, given(args.tls_ca, TLS_CA_ENV), given(args.tls_cert, TLS_CERT_ENV),
                                         given(args.tls_key, TLS_KEY_ENV), not args.tls_no_verify_hostname)
    except (BrokerSettingsError, TlsError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    for warning in warnings + tls_warnings:
        logging.getLogger("broker_mesos.framework.examples").warning("%s", warning)
    return broker, tls


def serve(driver: SchedulerDriver, *, teardown_on_exit: bool) -> int:
    """Run ``driver`` until SIGINT/SIGTERM (exit status 0) or until it fails (one line, status 1)."""

    def interrupt(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        driver.start()
        while driver.alive:
            time.sleep(POLL)
    except KeyboardInterrupt:
        if teardown_on_exit:
            driver.teardown()
        driver.stop()
    try:
        driver.join(10.0)
    except Exception as exc:  # BrokerUnreachable and the like: one line, no traceback
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


