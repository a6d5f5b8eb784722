"""Regenerate the data-locality table of docs/locality.md (Mesos paper, section 6.3, Figure 7).

    python scripts/simulate_locality.py [--seed 1] [--nodes 93] [--frameworks 16] [--waits 0,1,5]

Runs the simulator (broker_mesos.sim: the real master core on a virtual clock, no broker): static
partitioning, then every framework on the shared cluster with each delay-scheduling wait. Seeded and
deterministic: the same arguments always print the same table (Markdown, on stdout).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from broker_mesos.sim.locality_experiment import Result, Workload, run_experiment


def table(results: Sequence[Result]) -> str:
    static = results[0].mean_job_seconds
    lines = ["| configuration | local tasks | mean job time (s) | speed-up vs static | all jobs done at (s) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.variant} | {r.local_share:.1%} | {r.mean_job_seconds:.1f} | "
                     f"{static / r.mean_job_seconds:.2f}x | {r.makespan:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Workload()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Workload):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name), help=f"(default {getattr(defaults, f.name)})")
    parser.add_argument("--waits", default="0,1,5", help="delay-scheduling waits in seconds (default 0,1,5)")
    args = parser.parse_args(argv)
    workload = Workload(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Workload)})
    waits = [float(w) for w in args.waits.split(",") if w.strip()]
    results = run_experiment(workload, waits)
    shape = ", ".join(f"{f.name}={getattr(workload, f.name)}" for f in dataclasses.fields(Workload))
    sys.stdout.write(f"Workload: {shape}\n\n{table(results)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
