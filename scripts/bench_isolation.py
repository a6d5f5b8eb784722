"""What cgroup isolation costs and what it buys, on this machine (issue: tasks get what they were offered).

    .venv/bin/python scripts/bench_isolation.py [--tasks 2000] [--share-seconds 10]

1. Real-process launch throughput (`bmesos agent --executor command`, `true` tasks) with
   `--isolation cgroups` and `--isolation none`, beside plain `subprocess.Popen` of the same command in the
   same run (the fork/exec limit): tasks/s and the ratios; and the floor of a user switch alone (plain
   Popen of `true` through `setpriv`, through Popen's own `user=`, and through the agent's whole
   supervisor + switch chain), so the agent's own cost can be told from the processes it must start.
2. CPU shares: on one saturated agent (two CPU-bound tasks of 2 spinning processes each on this
   machine's cores), tasks with `cpus:1` and `cpus:3` (cgroups, no hard cap): the CPU seconds each got
   and their ratio (Mesos' cpu.shares: close to 1:3).

Needs root (cgroups) and Debian's rabbitmq-server; starts its own RabbitMQ node.
"""

from __future__ import annotations

import argparse
import pwd
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_launch import run_launch

from broker_mesos.agent.executor import SETPRIV, SUPERVISOR
from broker_mesos.core.protocol import Offer, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.scheduler import Scheduler
from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode

SPIN = ("import os, time, sys\n"
        "deadline = time.time() + float(sys.argv[1])\n"
        "kids = [os.fork() for _ in range(2)]\n"
        "if 0 in kids:\n"
        "    while time.time() < deadline: pass\n"
        "    os._exit(0)\n"
        "for _ in kids: os.wait()\n"
        "t = os.times()\n"
        "print(f'cpu {t.children_user + t.children_system:.3f}', flush=True)\n")


def popen_rate(count: int, argv: tuple[str, ...] = ("true",), **popen: object) -> float:
    """Processes per second, started and reaped one after another by plain subprocess.Popen."""
    started = time.perf_counter()
    for _ in range(count):
        subprocess.Popen(list(argv), **popen).wait()  # type: ignore[call-overload]
    return count / (time.perf_counter() - started)


def switch_floor(count: int) -> dict[str, float]:
    """What starting a task as another user costs before the agent does anything (needs root): the same
    `true`, (a) through `setpriv` (the exec that drops to the task's user; vfork still applies), (b) through
    Popen's own `user=`/`group=`/`extra_groups=` (no exec more, but Python then forks instead of vforking),
    (c) the whole chain an agent spawns today (supervisor `/bin/sh`, switch `/bin/sh`, `setpriv`)."""
    nobody = pwd.getpwnam("nobody")
    setpriv = (SETPRIV, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--inh-caps=-all",
               "--", "true")
    return {
        "setpriv": popen_rate(count, setpriv, start_new_session=True),
        "popen_user": popen_rate(count, ("true",), user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                                 start_new_session=True),
        "chain": popen_rate(count, ("/bin/sh", "-c", SUPERVISOR, "bmesos-supervise", "/dev/null", "/bin/sh", "-c",
                                    'exec "$@"', "bmesos-switch", *setpriv), start_new_session=True),
    }


class TwoSpinners(Scheduler):
    def __init__(self, seconds: float) -> None:
        self.seconds, self.launched, self.ended = seconds, False, 0

    def resource_offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        if self.launched:
            driver.decline([o.offer_id for o in offers], 600)
            return
        offer = offers[0]
        tasks = [task(f"share-{c}", offer.agent_id, ["/usr/bin/python3", "-c", SPIN, str(self.seconds)],
                      resources=Resources.of(cpus=c, mem=64)) for c in (1, 3)]
        self.launched = True
        driver.launch(offer, tasks)

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        if status.state.terminal:
            self.ended += 1
            if self.ended == 2:
                driver.stop()


def cpu_shares(url: str, work: Path, seconds: float) -> dict[str, float]:
    procs = ProcessGroup(work / "logs-shares")
    agent_dir = Path(tempfile.mkdtemp(prefix="bmesos-share-", dir="/tmp"))
    agent_dir.chmod(0o755)  # tasks run as nobody and must reach their sandboxes
    try:
        procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.05").wait_output("serving")
        agent = procs.bmesos("agent", "agent", "--broker", url, "--id", "share", "--resources", "cpus:4;mem:1024",
                             "--isolation", "cgroups", "--work-dir", str(agent_dir / "agent"))
        agent.wait_output(r"agent share registered", 60)
        SchedulerDriver(TwoSpinners(seconds), url, "shares").run()
        got = {}
        for cpus in (1, 3):
            out = next((agent_dir / "agent").rglob(f"share-{cpus}*/stdout"))
            got[f"cpus:{cpus}"] = float(out.read_text().split()[-1])
        return got
    finally:
        procs.stop_all()
        subprocess.run(["rm", "-rf", str(agent_dir)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--share-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bmesos-bench-iso-") as tmp:
        work = Path(tmp)
        node = RabbitNode(work / "rabbit", vhosts=4).start()
        try:
            base = popen_rate(args.tasks)
            print(f"plain Popen: {base:,.0f} processes/s", flush=True)
            for what, rate in switch_floor(args.tasks).items():
                print(f"floor {what:>10}: {rate:,.0f} processes/s ({rate / base:.2f}x Popen)", flush=True)
            for mode in ("none", "cgroups"):
                launch_dir = Path(tempfile.mkdtemp(prefix=f"bmesos-iso-{mode}-", dir="/tmp"))
                launch_dir.chmod(0o755)
                try:
                    result = run_launch(node.url(f"t{1 if mode == 'none' else 2}"), args.tasks, args.agents,
                                        "command", launch_dir, 0.05, "cpus:100;mem:100000",
                                        (f"--isolation={mode}",))
                finally:
                    subprocess.run(["rm", "-rf", str(launch_dir)], check=False)
                print(f"isolation {mode:>7}: {result['tasks_per_s']:,.0f} tasks/s "
                      f"({result['tasks_per_s'] / base:.2f}x Popen), {result['failed']} failed", flush=True)
            shares = cpu_shares(node.url("t3"), work, args.share_seconds)
            ratio = shares["cpus:3"] / shares["cpus:1"]
            print(f"cpu shares over {args.share_seconds:g}s: cpus:1 got {shares['cpus:1']:.1f} cpu-s, "
                  f"cpus:3 got {shares['cpus:3']:.1f} cpu-s, ratio 1:{ratio:.2f}", flush=True)
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
