"""The Prometheus endpoint of a long-lived process (``bmesos master`` / ``bmesos agent --metrics-port``).

Each process has a registry of its own (never prometheus-client's global one: several processes'
metrics can live in one interpreter, as in tests), served over HTTP by prometheus-client's own
server on a thread of its own. What a process *is* (its tasks, resources, agents...) is read at
scrape time on the process' own I/O loop, the only thread that may touch its state
(``sample_on_loop``): nothing is kept twice and nothing costs anything between scrapes. A loop that
does not answer within ``SAMPLE_TIMEOUT`` leaves those families out of that one scrape.

Resources are exported in base units per Prometheus' conventions: ``cpus``; ``mem`` and ``disk``
(megabytes on the wire) in bytes; every other resource, as a count in its own unit (a range or set
resource such as ``ports`` as the number of values), in one family labelled by resource name. Names
come from agents: at most ``MAX_RESOURCE_LABELS`` distinct ones are exported (sorted by name).
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

T = TypeVar("T")

SAMPLE_TIMEOUT = 5.0  # seconds a scrape waits for the process' loop (Prometheus' default scrape timeout: 10 s)
MAX_RESOURCE_LABELS = 32  # distinct names in the `..._resource{resource=...}` families, at most
MB = float(2**20)  # `mem` and `disk` travel in megabytes (MiB, as in Mesos)
BYTES_RESOURCES = frozenset({"mem", "disk"})  # exported in bytes
NAMED_RESOURCES = frozenset({"cpus", "mem", "disk"})  # families of their own; the rest: `..._resource`


def version() -> str:
    try:
        return metadata.version("broker-mesos")
    except metadata.PackageNotFoundError:
        return "unknown"


def new_registry() -> CollectorRegistry:
    """A registry of this process' own, with prometheus-client's process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def build_info() -> Metric:
    """``bmesos_build_info{version, python}`` = 1."""
    return InfoMetricFamily("bmesos_build", "The broker-mesos version this process runs.",
                            value={"version": version(), "python": platform.python_version()})


@dataclass
class MetricsServer:
    """A running endpoint: ``url`` serves ``/metrics``; ``close`` stops it (never raises)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        try:
            self.server.shutdown()
            self.server.server_close()
        except Exception:  # close must not raise
            log.exception("closing the metrics endpoint failed")


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` (any path answers); raises ``OSError`` when
    the address cannot be bound (in use, or not this machine's)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return MetricsServer(server, thread)


def sample_on_loop(call_threadsafe: Callable[[Callable[[], None]], None], sample: Callable[[], T],
                   timeout: float = SAMPLE_TIMEOUT) -> T | None:
    """Run ``sample`` on the process' loop (via its ``call_threadsafe``) and wait for its result; None
    if it failed (logged) or the loop did not run it within ``timeout``. ``sample`` never raises into
    the loop."""
    done = threading.Event()
    result: list[T] = []

    def run() -> None:
        try:
            result.append(sample())
        except Exception:  # a metrics bug must never take the loop down
            log.exception("sampling metrics failed")
        finally:
            done.set()

    call_threadsafe(run)
    if not done.wait(timeout):
        log.warning("metrics: the process loop did not answer within %.1fs; state left out of this scrape",
                    timeout)
        return None
    return result[0] if result else None


class SampledCollector:
    """A prometheus-client collector whose families come from one sample taken at scrape time."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:  # no scrape-time sampling at registration
        return []


def add_amounts(into: dict[str, float], amounts: Mapping[str, float]) -> None:
    for name, value in amounts.items():
        into[name] = into.get(name, 0.0) + value


def resource_families(prefix: str, what: str, groups: Mapping[tuple[str, ...], Mapping[str, Mapping[str, float]]],
                      extra_labels: tuple[str, ...] = ()) -> list[Metric]:
    """``<prefix>_cpus``, ``<prefix>_memory_bytes``, ``<prefix>_disk_bytes`` and ``<prefix>_resource``
    (labelled ``resource``), each labelled ``kind``. ``groups``: the values of ``extra_labels`` (``()``
    for none; e.g. ``("role",)`` and one group per role) -> kind (e.g. total, used, offered) ->
    resource name -> amount in the resource's own unit (mem and disk in MB, converted to bytes here).
    ``what`` says whose resources they are, for the help text."""
    labels = [*extra_labels, "kind"]
    names = {n for kinds in groups.values() for amounts in kinds.values() for n in amounts}
    others = sorted(names - NAMED_RESOURCES)[:MAX_RESOURCE_LABELS]
    families = {
        "cpus": GaugeMetricFamily(f"{prefix}_cpus", f"CPUs of {what}, by kind.", labels=labels),
        "mem": GaugeMetricFamily(f"{prefix}_memory_bytes", f"Memory of {what} (resource mem), by kind.",
                                 labels=labels),
        "disk": GaugeMetricFamily(f"{prefix}_disk_bytes", f"Disk of {what} (resource disk), by kind.", labels=labels),
    }
    other = GaugeMetricFamily(f"{prefix}_resource", f"Other resources of {what} in their own units (range and set "
                              "resources such as ports: the number of values), by resource and kind.",
                              labels=[*extra_labels, "resource", "kind"])
    for values, kinds in sorted(groups.items()):
        for kind, amounts in kinds.items():
            for name, family in families.items():
                amount = amounts.get(name, 0.0)
                family.add_metric([*values, kind], amount * MB if name in BYTES_RESOURCES else amount)
            for name in others:
                other.add_metric([*values, name, kind], amounts.get(name, 0.0))
    return [*families.values(), other]


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def labelled_gauge(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def info(name: str, documentation: str, **labels: Any) -> InfoMetricFamily:
    return InfoMetricFamily(name, documentation, value={k: str(v) for k, v in labels.items()})
