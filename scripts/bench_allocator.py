"""One allocation round of the pure master, full and incremental, per policy, with offers encoded.

    python scripts/bench_allocator.py [--agents 1000,10000,50000] [--frameworks 10,100,1000]
                                      [--policies drf,priority,fair,binpack] [--repeat 7] [--markdown]

For each cluster size a MasterState gets N agents (``cpus:16;mem:65536;disk:100000``, a rack
attribute) and M frameworks spread over 10 roles. A *full* round hands out every agent (all offers
returned to the pool beforehand, untimed, and a full round forced as after a policy swap); an
*incremental* round follows a full one after 1 % of the agents' offers were declined (refuse 0), so
only those agents changed. Timed: ``MasterState.allocation_round`` plus ``codec.encode`` of every
message it produced. Reported: median and p99 over ``--repeat`` rounds, and the peak memory of one
more round under tracemalloc (timed separately: tracemalloc slows Python down).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

from broker_mesos.core import codec, protocol
from broker_mesos.core.master import MasterConfig, MasterState, ToFramework
from broker_mesos.core.resources import Resources

POLICY_PARAMS = {"drf": {}, "priority": {"priorities": "role0:10,role1:5"}, "fair": {"resource": "cpus"},
                 "binpack": {}}
AGENT = Resources.parse("cpus:16;mem:65536;disk:100000")
ROLES = 10
SKIP_ABOVE = 50_000 * 1_000  # agents x frameworks beyond which a combination is skipped


def build(agents: int, frameworks: int, policy: str) -> MasterState:
    state = MasterState(MasterConfig("bench", offer_timeout=1e9, allocator=policy,
                                     allocator_params=tuple(POLICY_PARAMS[policy].items())))
    for i in range(agents):
        state.agent_info(protocol.Register(f"agent-{i}", f"host-{i}", AGENT, {"rack": f"r{i % 40}"}), 0.0)
    for i in range(frameworks):
        state.subscribe(protocol.Subscribe(f"fw-{i}", f"fw-{i}", f"role{i % ROLES}"), None, "c", 0.0)
    return state


def encode_all(effects: list[object], now: float) -> int:
    size = 0
    for effect in effects:
        if isinstance(effect, ToFramework):
            size += len(codec.encode(effect.body, now))
    return size


def decline(state: MasterState, offer_ids: list[str], now: float) -> None:
    by_framework: dict[str, list[str]] = {}
    for offer_id in offer_ids:
        by_framework.setdefault(state.offers[offer_id].framework_id, []).append(offer_id)
    for framework_id, ids in by_framework.items():
        state.decline(protocol.Decline(framework_id, ids, 0.0), now)


def timed_round(state: MasterState, now: float) -> tuple[float, int]:
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        effects = state.allocation_round(now)
        encode_all(effects, now)
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    return elapsed, sum(len(e.body.offers) for e in effects
                        if isinstance(e, ToFramework) and isinstance(e.body, protocol.Offers))


def measure(state: MasterState, prepare: Callable[[float], None], repeat: int) -> dict[str, float]:
    now = 10.0
    times, offers = [], 0
    for _ in range(repeat + 1):  # the first is a warm-up
        now += 1.0
        prepare(now)
        elapsed, offers = timed_round(state, now)
        times.append(elapsed)
    times = times[1:]
    now += 1.0
    prepare(now)
    tracemalloc.start()
    state.allocation_round(now)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return {"median_ms": statistics.median(times) * 1000, "p99_ms": p99 * 1000, "peak_mib": peak / 2**20,
            "offers": offers}


def run(agents: int, frameworks: int, policy: str, repeat: int) -> dict[str, dict[str, float]]:
    state = build(agents, frameworks, policy)

    def full(now: float) -> None:
        decline(state, list(state.offers), now)
        state.allocator.full_due = True

    changed = max(1, agents // 100)

    def incremental(now: float) -> None:
        if len(state.offers) < agents or state.allocator.full_round_due(now):
            full(now)
            state.allocation_round(now)
        decline(state, list(state.offers)[:changed], now)

    return {"full": measure(state, full, repeat), "incremental": measure(state, incremental, repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="1000,10000,50000")
    parser.add_argument("--frameworks", default="10,100,1000")
    parser.add_argument("--policies", default="drf,priority,fair,binpack")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--markdown", action="store_true", help="Print a markdown table at the end.")
    args = parser.parse_args()
    rows = []
    for agents in (int(a) for a in args.agents.split(",")):
        for frameworks in (int(f) for f in args.frameworks.split(",")):
            if agents * frameworks > SKIP_ABOVE:
                print(f"skip {agents} x {frameworks}: above {SKIP_ABOVE:,} agent-frameworks", flush=True)
                continue
            for policy in args.policies.split(","):
                result = run(agents, frameworks, policy, args.repeat)
                for kind, r in result.items():
                    rows.append((agents, frameworks, policy, kind, r))
                    print(f"{agents:>6} agents {frameworks:>5} frameworks {policy:<8} {kind:<11} "
                          f"median {r['median_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                          f"peak {r['peak_mib']:7.2f} MiB  offers {r['offers']:.0f}", flush=True)
    if args.markdown:
        print("\n| agents | frameworks | policy | round | median ms | p99 ms | peak MiB | offers |")
        print("| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
        for agents, frameworks, policy, kind, r in rows:
            print(f"| {agents:,} | {frameworks:,} | {policy} | {kind} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | "
                  f"{r['peak_mib']:.1f} | {r['offers']:,.0f} |")


if __name__ == "__main__":
    main()
