"""A fake master for agent tests: sends RUN_TASKS / KILL_TASKS straight to a real agent process and reads
what it reports (STATUS on `status`, REGISTER / HEARTBEAT on `agent.register`), over a blocking pika
connection of the test's own, with no master process in between. Only for clusters in development mode
(agents that are no principal accept task messages from anyone)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pika

from broker_mesos.bus import topology
from broker_mesos.bus.connection import CONTENT_TYPE
from broker_mesos.core import codec
from broker_mesos.core.protocol import Heartbeat, KillTasks, RunTasks, TaskInfo, TaskState, TaskStatus
from broker_mesos.testing.wait import wait_for

PERSISTENT_MSGPACK = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2)


class FakeMaster:
    """``run`` / ``kill`` tasks of framework ``framework_id`` on an agent; ``wait_state`` for their updates."""

    def __init__(self, url: str, framework_id: str = "fw1") -> None:
        self.framework_id = framework_id
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        for ex in topology.EXCHANGES:
            self.ch.exchange_declare(ex.name, ex.type, durable=True)
        self.agents_q = self.ch.queue_declare("", exclusive=True).method.queue
        for key in (topology.KEY_REGISTER, topology.KEY_HEARTBEAT):
            self.ch.queue_bind(self.agents_q, topology.AGENT_REGISTER, routing_key=key)
        self.status_q = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.status_q, topology.STATUS, routing_key="#")
        self.agent_msgs: list[Any] = []
        self.statuses: list[TaskStatus] = []

    def close(self) -> None:
        self.conn.close()

    def _drain(self, queue: str) -> list[Any]:
        bodies = []
        while True:
            method, _props, body = self.ch.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(codec.decode(body).body)

    def poll(self) -> None:
        self.agent_msgs.extend(self._drain(self.agents_q))
        for status in self._drain(self.status_q):
            self.statuses.extend(status.updates)

    def latest_heartbeat(self) -> Heartbeat | None:
        """The newest HEARTBEAT that arrived since the last call, if any."""
        new = self._drain(self.agents_q)
        self.agent_msgs.extend(new)
        return next((b for b in reversed(new) if isinstance(b, Heartbeat)), None)

    def states(self, task_id: str) -> list[TaskState]:
        self.poll()
        return [u.state for u in self.statuses if u.task_id == task_id]

    def wait_state(self, task_id: str, state: TaskState, timeout: float = 20.0) -> TaskStatus:
        def found() -> TaskStatus | None:
            self.poll()
            return next((u for u in self.statuses if u.task_id == task_id and u.state is state), None)

        return wait_for(found, timeout, f"{task_id} to reach {state.value} (seen: {self.states(task_id)})")

    def run(self, agent_id: str, *tasks: TaskInfo) -> None:
        """Launch ``tasks`` on ``agent_id`` (their agent ids are set to it: agents refuse others' tasks)."""
        self.send(agent_id, RunTasks(self.framework_id, [dataclasses.replace(t, agent_id=agent_id) for t in tasks]))

    def kill(self, agent_id: str, *task_ids: str) -> None:
        self.send(agent_id, KillTasks(self.framework_id, list(task_ids)))

    def send(self, agent_id: str, body: Any) -> None:
        self.ch.basic_publish(topology.TASKS, agent_id, codec.encode(body, 0.0), PERSISTENT_MSGPACK)
