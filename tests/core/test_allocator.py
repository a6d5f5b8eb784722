from __future__ import annotations

from fractions import Fraction

from broker_mesos.core.allocator import Client, DRFSorter, allocatable, allocate
from broker_mesos.core.resources import Resources


def test_drf_paper_example() -> None:
    """Ghodsi et al. 2011: 9 CPU, 18 GB; A's tasks <1, 4>, B's <3, 1>: A runs 3, B runs 2, shares 2/3."""
    total = Resources.of(cpus=9, mem=18)
    demand = {"A": Resources.of(cpus=1, mem=4), "B": Resources.of(cpus=3, mem=1)}
    sorter = DRFSorter([Client("A", seq=1), Client("B", seq=2)], total)
    free = total
    launched = {"A": 0, "B": 0}
    progress = True
    while progress:
        progress = False
        for client in sorter.sort():
            if demand[client] <= free:
                free = free - demand[client]
                sorter.allocate(client, demand[client])
                launched[client] += 1
                progress = True
                break
    assert launched == {"A": 3, "B": 2}
    assert Fraction(sorter.share("A")).limit_denominator(100) == Fraction(2, 3)
    assert Fraction(sorter.share("B")).limit_denominator(100) == Fraction(2, 3)


def test_weights_scale_shares() -> None:
    total = Resources.of(cpus=10)
    sorter = DRFSorter([Client("heavy", weight=2.0, allocated=Resources.of(cpus=4), seq=1),
                        Client("light", weight=1.0, allocated=Resources.of(cpus=3), seq=2)], total)
    assert sorter.sort() == ["heavy", "light"]


def test_round_gives_each_agent_to_the_neediest() -> None:
    total = Resources.of(cpus=8, mem=8192)
    free = {"a1": Resources.of(cpus=4, mem=4096), "a2": Resources.of(cpus=4, mem=4096)}
    clients = [Client("fw1", allocated=Resources(), seq=1), Client("fw2", allocated=Resources(), seq=2)]
    result = allocate(free, clients, total, lambda fw, agent, res: False)
    assert {(a.framework_id, a.agent_id) for a in result} == {("fw1", "a1"), ("fw2", "a2")}
    assert clients[0].allocated == Resources()  # pure: inputs untouched


def test_filters_pass_the_agent_to_the_next_client() -> None:
    total = Resources.of(cpus=4)
    free = {"a1": Resources.of(cpus=4)}
    clients = [Client("fw1", seq=1), Client("fw2", seq=2)]
    result = allocate(free, clients, total, lambda fw, agent, res: fw == "fw1")
    assert [(a.framework_id, a.agent_id) for a in result] == [("fw2", "a1")]
    assert allocate(free, clients, total, lambda fw, agent, res: True) == []


def test_crumbs_are_not_offered() -> None:
    assert not allocatable(Resources.of(cpus=0.001, mem=1))
    assert allocatable(Resources.of(cpus=0.5))
    assert allocatable(Resources.of(mem=64))
    assert allocate({"a": Resources.of(disk=5)}, [Client("fw")], Resources.of(disk=5), lambda f, a, r: False) == []
