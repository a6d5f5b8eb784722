"""A small malformed-message flood over every input of a real cluster (scripts/flood.py at small N).

The same code as ``scripts/flood.py`` (its ``run_flood``), on the session's RabbitMQ node: a master,
agents a1 and a2 and an SDK framework take 2,000 malformed messages of every kind on every input
(the giant ones scaled down: 100,000-character strings, a 20,000-range REGISTER; one message of about
8 MiB stays). Afterwards no process died or lost its broker connection, every input queue is empty
within the deadline and the cluster still runs a job.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from broker_mesos.testing.processes import ProcessGroup
from broker_mesos.testing.rabbit import RabbitNode

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "flood.py"
DRAIN_DEADLINE = 20.0


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bmesos_flood_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


flood = load_script()


def small_options() -> object:
    return flood.FloodOptions(messages=2000, seconds=40.0, huge_chars=100_000, huge_count=2, near_limit_count=1,
                              port_ranges=20_000, port_flood_count=1, max_bytes=64 * 1024 * 1024,
                              drain_timeout=DRAIN_DEADLINE, run_timeout=30.0)


def test_the_flood_reaches_every_input_with_every_kind() -> None:
    """The message plan alone (no broker): 2,000 messages cover every (input, kind) pair and the giants."""
    maker = flood.Malformer(small_options())
    messages = [maker.message(seq) for seq in range(2000)]
    by_queue = Counter(q for m in messages for q in m.target.queues)
    assert set(by_queue) == set(flood.input_queues())
    pairs = {(m.target.group, m.kind) for m in messages}
    groups = {t.group for group in flood.input_groups() for t in group}
    assert {(g, k) for g in groups for k in flood.ROTATING_KINDS} <= pairs
    assert Counter(m.kind for m in messages if m.kind in flood.GIANT_KINDS) == \
        {"huge-string": 2, "near-limit": 1, "port-flood": 1}
    near = next(m for m in messages if m.kind == "near-limit")
    assert 8 * 1024 * 1024 - 1024 < len(near.body) <= 8 * 1024 * 1024
    again = flood.Malformer(small_options())
    def plan(m: object) -> tuple[str, str, str]:
        return m.target.key, m.kind, m.variant  # type: ignore[attr-defined]

    assert [plan(again.message(seq)) for seq in range(200)] == [plan(m) for m in messages[:200]]  # seeded


@pytest.mark.timeout(150)
def test_a_cluster_survives_a_small_flood(rabbit_node: RabbitNode, broker_url: str, procs: ProcessGroup,
                                          tmp_path: Path) -> None:
    report = flood.run_flood(broker_url, procs, tmp_path, small_options(), node=rabbit_node, log=print)
    text = flood.markdown(report)
    print(text)

    assert report.sent == 2000, text
    for p in report.processes:
        assert p.alive and p.pid_after == p.pid_before, f"{p.name} died or restarted\n{text}"
        assert not p.connection_losses, f"{p.name} lost its broker connection\n{text}"
    assert report.drained and report.drain_seconds is not None and report.drain_seconds <= DRAIN_DEADLINE, text
    assert all(state.get("ready") == 0 for state in report.queues_after.values()), text
    assert report.unacked_after == 0, text
    assert report.final_run_exit == 0, text
    assert report.ok, text
