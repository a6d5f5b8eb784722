"""Example frameworks on the scheduler SDK: ``reference`` (Mesos' documented offer flow) and ``sleeper``."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from broker_mesos.cli.common import setup_logging  # the commands' logging: wire text escaped
from broker_mesos.framework.driver import SchedulerDriver

__all__ = ["common_arguments", "emit", "serve", "setup_logging"]

POLL = 0.2


def emit(line: str) -> None:
    """One output line, flushed at once: these lines are what people and tests read."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F", help="AMQP URL of RabbitMQ")
    parser.add_argument("--framework-id", default=None, help="framework id (default: <name>-<8 hex>)")
    parser.add_argument("--name", default=name, help="framework name")
    parser.add_argument("--role", default="*", help="the framework's role")
    parser.add_argument("--connect-timeout", type=float, default=15.0, help="seconds to reach the broker")
    parser.add_argument("--no-teardown", action="store_true",
                        help="on exit, leave the framework and its tasks to the master instead of TEARDOWN")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


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


