"""The newcomer demo: a master and three agents on this machine, a 12-task job across them, a summary.

Run it through ``scripts/demo`` (which installs what is missing). Every process is a real ``bmesos``
child talking only through RabbitMQ: a private node started here, or ``--broker URL``. Everything is
stopped at the end, also on Ctrl-C or an error; logs and task sandboxes stay behind for reading.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode

AGENTS = ("demo-agent-1", "demo-agent-2", "demo-agent-3")
AGENT_RESOURCES = "cpus:2;mem:2048"
# 0.5 cpus per task: four fit on an agent, so the 12 tasks spread over all three.
RUN_ARGS = ("run", "--count", "12", "--name", "demo", "--cpus", "0.5", "--",
            "sh", "-c", "echo hello from $BMESOS_AGENT_ID; sleep 0.2")
STARTUP_TIMEOUT = 60.0
RUN_STOP_WAIT = 15.0


def bmesos(*args: str) -> list[str]:
    """``bmesos ARGS`` run by this interpreter (the .venv's), so it works before PATH knows bmesos."""
    return [sys.executable, "-m", "broker_mesos.cli.main", *args]


def on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_job(env: dict[str, str]) -> int:
    """Run the demo job in the foreground (its output goes straight to this terminal)."""
    job = subprocess.Popen(bmesos(*RUN_ARGS), env={**os.environ, **env})
    try:
        return job.wait()
    except KeyboardInterrupt:  # the job got the Ctrl-C too: let it tear its framework down first
        try:
            job.wait(RUN_STOP_WAIT)
        except subprocess.TimeoutExpired:
            job.kill()
        raise


def tasks_per_agent(work: Path) -> dict[str, int]:
    """Count the task sandboxes each agent created: <work-dir>/frameworks/<fw>/tasks/<task>/."""
    return {agent: len(list((work / agent).glob("frameworks/*/tasks/*"))) for agent in AGENTS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", metavar="URL", help="use this RabbitMQ instead of starting a private node")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)

    base = Path(tempfile.mkdtemp(prefix="bmesos-demo-"))
    logs, work = base / "logs", base / "work"
    procs = ProcessGroup(logs)
    node: RabbitNode | None = None
    code = 1
    try:
        broker = args.broker
        if broker is None:
            print("starting a private RabbitMQ node ...", flush=True)
            node = RabbitNode(base / "rabbit", vhosts=1)  # assigned first: Ctrl-C during boot stops it too
            node.start()
            broker = node.url()
        env = {"BMESOS_BROKER": broker}
        print(f"starting a master and {len(AGENTS)} agents (logs in {logs}) ...", flush=True)
        master = procs.start("master", bmesos("master", "--allocation-interval", "0.2"), env)
        master.wait_output(r"master \S+ serving", STARTUP_TIMEOUT)
        agents = [procs.start(agent, bmesos("agent", "--id", agent, "--resources", AGENT_RESOURCES,
                                            "--work-dir", str(work / agent)), env) for agent in AGENTS]
        for agent in agents:
            agent.wait_output(r"agent \S+ registered", STARTUP_TIMEOUT)

        print(f"$ bmesos {shlex.join(RUN_ARGS)}", flush=True)
        started = time.monotonic()
        code = run_job(env)
        wall = time.monotonic() - started

        print("\nsummary")
        for agent, count in tasks_per_agent(work).items():
            print(f"  {agent}: {count} task(s)")
        print(f"  wall time: {wall:.2f}s, exit code {code}")
        print(f"  logs: {logs}\n  task sandboxes (stdout, stderr): {work}/<agent>/frameworks/")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # one readable line, then the cleanup below; logs have the details
        print(f"demo failed: {exc}\nlogs: {logs}", file=sys.stderr)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        procs.stop_all()
        if node is not None:
            node.stop()
            shutil.rmtree(base / "rabbit", ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
