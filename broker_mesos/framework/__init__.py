"""The framework SDK: subclass ``Scheduler``, hand it to a ``SchedulerDriver``, build tasks with ``task``."""

from broker_mesos.framework.driver import SchedulerDriver, task
from broker_mesos.framework.scheduler import Scheduler

__all__ = ["Scheduler", "SchedulerDriver", "task"]
