"""The framework SDK: subclass ``Scheduler``, hand it to a ``SchedulerDriver``, build tasks with ``task``
(and the executors that run them with ``executor_info``).

The names are imported on first use, so the pure parts of the SDK (``scheduler``, ``locality``) load
without the broker client: the simulator (``broker_mesos.sim``) runs them with no pika installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker_mesos.framework.driver import SchedulerDriver, executor_info, task
    from broker_mesos.framework.scheduler import Scheduler

__all__ = ["Scheduler", "SchedulerDriver", "executor_info", "task"]

_HOMES = {"Scheduler": "broker_mesos.framework.scheduler", "SchedulerDriver": "broker_mesos.framework.driver",
          "task": "broker_mesos.framework.driver", "executor_info": "broker_mesos.framework.driver"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
