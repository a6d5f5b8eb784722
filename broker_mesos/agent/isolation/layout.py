"""What an agent's cgroups are called, and how their flat-keyed files read (pure).

An agent's tasks live below the agent's own cgroup, in every hierarchy it uses, so that whatever
limits the agent (a systemd slice, a container) limits its tasks too::

    <agent's cgroup>/bmesos/agent.<agent_id>.<8 hex>/framework.<framework_id>/task.<task_id>

The 8 hex digits (``isolation.cgroup_name``) come from the agent's work dir: two agents of one id on one machine
(two test or development clusters) never share a subtree, so neither takes the other's task cgroups
for orphans and kills them at its start. A ``.`` never occurs in an agent id, so no agent's name is
another's prefix.

The prefixes keep ids (``[A-Za-z0-9_-]``) from ever meeting a cgroup v1 control file of the same name
(``tasks``, ``notify_on_release``).
"""

from __future__ import annotations

from pathlib import PurePosixPath

ROOT = "bmesos"
AGENT_PREFIX = "agent."
FRAMEWORK_PREFIX = "framework."
TASK_PREFIX = "task."
V1_CONTROLLERS = ("memory", "cpu", "pids")
"""The v1 hierarchies a task joins; memory is required, the others are used when mounted."""
V2_CONTROLLERS = ("memory", "cpu", "pids")


def agent_subtree(agent_id: str) -> PurePosixPath:
    """The agent's part of a hierarchy, relative to the agent's own cgroup."""
    return PurePosixPath(ROOT, AGENT_PREFIX + agent_id)


def task_subpath(framework_id: str, task_id: str) -> PurePosixPath:
    """A task's cgroup, relative to its agent's subtree."""
    return PurePosixPath(FRAMEWORK_PREFIX + framework_id, TASK_PREFIX + task_id)


def task_key(framework_dir: str, task_dir: str) -> tuple[str, str] | None:
    """The (framework_id, task_id) a pair of directory names stands for; None for anything else."""
    if framework_dir.startswith(FRAMEWORK_PREFIX) and task_dir.startswith(TASK_PREFIX):
        return framework_dir[len(FRAMEWORK_PREFIX):], task_dir[len(TASK_PREFIX):]
    return None


def parse_keyed(text: str) -> dict[str, int]:
    """A flat-keyed cgroup file (``memory.events``, ``memory.oom_control``): ``key value`` lines."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out
