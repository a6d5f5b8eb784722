"""What an agent offers and who it is: resource detection (psutil), agent ids, option parsing.

Detection follows Mesos' defaults: every logical CPU, all physical memory, the size of the work
directory's filesystem, and ports 31000-32000; but within the agent's own container: a cpu affinity
mask (cpuset), a cgroup cpu quota or a cgroup memory limit lowers cpus and mem to what the agent may use
(``container_limits``), so that each replica of a ``cpus:`` / ``mem_limit:`` container offers its own
share, never the host's. What was detected, and why, is logged. ``--resources`` replaces detection entirely.
"""

from __future__ import annotations

import logging
import os
import re
import socket

import psutil

from broker_mesos.agent.container_limits import (
    MB,
    advertised_cpus,
    advertised_mem,
    affinity_cpus,
    read_cgroup_limits,
)
from broker_mesos.core.codec import ID_PATTERN
from broker_mesos.core.errors import ResourceError
from broker_mesos.core.resources import Resources

__all__ = ["DEFAULT_PORTS", "MB", "check_agent_id", "default_agent_id", "detect_resources", "parse_resources"]

DEFAULT_PORTS = (31000, 32000)
_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ID = 128

log = logging.getLogger(__name__)


def default_agent_id(hostname: str | None = None) -> str:
    """The hostname made into an identifier (``node1.example`` -> ``node1-example``).

    A docker-compose replica's hostname is its container id, so ``--scale agent=N`` gives N ids.
    """
    name = _NOT_ID_CHAR.sub("-", hostname if hostname is not None else socket.gethostname())[:_MAX_ID]
    return name or "agent"


def check_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it can name a queue and a routing key, else raise ``ValueError``."""
    if not ID_PATTERN.fullmatch(agent_id):
        raise ValueError(f"{agent_id!r} is not a valid agent id (1-128 of A-Z a-z 0-9 _ -)")
    return agent_id


def detect_resources(work_dir: str | os.PathLike[str], root: str | os.PathLike[str] = "/") -> Resources:
    """What this agent may use: cpus and memory (MB) within its container's limits (cgroup cpu quota and
    memory limit under ``root``'s /proc and cgroup mounts, cpu affinity), the work dir filesystem's size
    (MB), ports. Logs each value and why, e.g. ``cpus:1.5 (cgroup cpu quota 150000/100000 in ...)``."""
    limits = read_cgroup_limits(root)
    cpus, cpus_why = advertised_cpus(psutil.cpu_count(logical=True) or 1, affinity_cpus(), limits.cpu)
    mem, mem_why = advertised_mem(psutil.virtual_memory().total, limits.memory)
    disk = psutil.disk_usage(os.fspath(work_dir)).total // MB
    lo, hi = DEFAULT_PORTS
    log.info("detected resources: cpus:%g (%s), mem:%g (%s), disk:%g (size of %s), ports:[%d-%d]; "
             "--resources overrides", cpus, cpus_why, mem, mem_why, disk, os.fspath(work_dir), lo, hi)
    if not cpus:
        log.warning("the cpu quota is under 0.1 cpu: this agent offers no cpus")
    return Resources(scalars={"cpus": cpus, "mem": mem, "disk": float(disk)},
                     ranges={"ports": (DEFAULT_PORTS,)})


def parse_resources(text: str) -> Resources:
    """Parse ``--resources`` text; an empty bundle is refused since such an agent could run nothing."""
    resources = Resources.parse(text)
    if not resources:
        raise ResourceError(f"no resources in {text!r}: expected e.g. 'cpus:4;mem:4096;ports:[31000-32000]'")
    return resources
