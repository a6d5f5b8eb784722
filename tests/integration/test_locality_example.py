"""examples/locality.py against a real master and agents with --attributes: delay scheduling end to end."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from broker_mesos.testing.processes import Proc, ProcessGroup

EXAMPLE = "broker_mesos.framework.examples.locality"


def start_cluster(procs: ProcessGroup, url: str, work: Path) -> None:
    """A master; agent r1-agent (rack r1, room for one task) and r2-agent (rack r2, room for four)."""
    master = procs.bmesos("master", "master", "--broker", url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving")
    for agent_id, rack, cpus in (("r1-agent", "r1", 1), ("r2-agent", "r2", 4)):
        agent = procs.bmesos(agent_id, "agent", "--broker", url, "--id", agent_id, "--attributes", f"rack:{rack}",
                             "--resources", f"cpus:{cpus};mem:1024", "--work-dir", str(work / agent_id))
        agent.wait_output(rf"agent {agent_id} registered", timeout=60)


def run_example(procs: ProcessGroup, url: str, name: str, *args: str) -> Proc:
    return procs.start(name, [sys.executable, "-m", EXAMPLE, "--broker", url, "--name", name, "--tasks", "2",
                              "--cpus", "1", "--mem", "64", "--prefer", "rack:r1", *args])


def test_tasks_wait_for_the_preferred_rack_when_it_frees_up_within_the_wait(
        broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    """Only one task fits on rack r1 at a time; r2 has room all along, yet with a 60 s wait both tasks
    run on r1, the second after the first has finished."""
    start_cluster(procs, broker_url, tmp_path)
    fw = run_example(procs, broker_url, "patient", "--wait", "60", "--seconds", "1")
    fw.wait_output(r"^done local=2 non-local=0 failed=0$", timeout=90)
    assert fw.wait(30) == 0
    out = fw.output()
    assert re.search(r"^task patient-0 ran local on r1-agent$", out, re.MULTILINE)
    assert re.search(r"^task patient-1 ran local on r1-agent$", out, re.MULTILINE)
    second = re.search(r"^launch patient-1 on r1-agent local waited=(\S+)$", out, re.MULTILINE)
    assert second is not None and float(second.group(1)) >= 1.0  # it waited for the first one's second
    assert "non-local" not in out.split("done")[0]


def test_tasks_take_any_agent_once_the_wait_is_over(broker_url: str, procs: ProcessGroup, tmp_path: Path) -> None:
    """The first task holds rack r1 for 60 s; the second gives up on r1 after its 1 s wait and runs on r2."""
    start_cluster(procs, broker_url, tmp_path)
    fw = run_example(procs, broker_url, "hasty", "--wait", "1", "--seconds", "60")
    fw.wait_output(r"^launch hasty-0 on r1-agent local", timeout=60)
    late = fw.wait_output(r"^launch hasty-1 on r2-agent non-local waited=(\S+)$", timeout=60)
    assert float(late.group(1)) >= 1.0
    fw.wait_output(r"^status hasty-1 TASK_RUNNING$", timeout=60)
    assert "hasty-1 on r1-agent" not in fw.output()
