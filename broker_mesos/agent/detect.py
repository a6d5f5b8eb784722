"""What an agent offers and who it is: resource detection (psutil), agent ids, option parsing.

Detection follows Mesos' defaults: every logical CPU, all physical memory, the size of the work
directory's filesystem, and ports 31000-32000. ``--resources`` replaces detection entirely.
"""

from __future__ import annotations

import os
import re
import socket

import psutil

from broker_mesos.core.codec import ID_PATTERN
from broker_mesos.core.errors import ResourceError
from broker_mesos.core.resources import Resources

DEFAULT_PORTS = (31000, 32000)
MB = 1024 * 1024
_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ID = 128


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


def detect_resources(work_dir: str | os.PathLike[str]) -> Resources:
    """This machine's resources: logical cpus, total memory (MB), work dir filesystem size (MB), ports."""
    cpus = psutil.cpu_count(logical=True) or 1
    mem = psutil.virtual_memory().total // MB
    disk = psutil.disk_usage(os.fspath(work_dir)).total // MB
    return Resources(scalars={"cpus": float(cpus), "mem": float(mem), "disk": float(disk)},
                     ranges={"ports": (DEFAULT_PORTS,)})


def parse_resources(text: str) -> Resources:
    """Parse ``--resources`` text; an empty bundle is refused since such an agent could run nothing."""
    resources = Resources.parse(text)
    if not resources:
        raise ResourceError(f"no resources in {text!r}: expected e.g. 'cpus:4;mem:4096;ports:[31000-32000]'")
    return resources
