"""The shared Prometheus endpoint (``broker_mesos.exporter``): sampling on a process' loop, serving, closing."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker_mesos import exporter


class Loop:
    """A loop thread like the bus': runs what ``call_threadsafe`` hands it, in order."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []
        self.ran_on: list[str] = []
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self.run, name="loop", daemon=True)
        self.thread.start()

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        with self.wake:
            self.calls.append(fn)
            self.wake.notify()

    def run(self) -> None:
        while True:
            with self.wake:
                self.wake.wait_for(lambda: bool(self.calls))
                fn = self.calls.pop(0)
            fn()  # an exception here would end the loop, as it would end pika's


def test_a_sample_runs_on_the_loop_and_a_failing_one_leaves_the_loop_running() -> None:
    loop = Loop()

    def where() -> str:
        return threading.current_thread().name

    assert exporter.sample_on_loop(loop.call_threadsafe, where) == "loop"

    def broken() -> str:
        raise RuntimeError("a bug in a metric")

    assert exporter.sample_on_loop(loop.call_threadsafe, broken) is None
    assert exporter.sample_on_loop(loop.call_threadsafe, where) == "loop" and loop.thread.is_alive()


def test_a_loop_that_does_not_answer_times_out() -> None:
    assert exporter.sample_on_loop(lambda fn: None, lambda: 1, timeout=0.05) is None


def test_serve_answers_scrapes_and_close_stops_it() -> None:
    registry = exporter.new_registry()
    registry.register(exporter.SampledCollector(lambda: [exporter.build_info(),
                                                         exporter.gauge("bmesos_test_things", "Things.", 3)]))
    server = exporter.serve(registry, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        assert families["bmesos_test_things"].samples[0].value == 3
        assert families["bmesos_build_info"].samples[0].labels["version"] == exporter.version()
        assert "process_cpu_seconds" in families
        with pytest.raises(OSError):
            exporter.serve(registry, "127.0.0.1", server.port)
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass
