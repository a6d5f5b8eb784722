"""The one error tree of broker-mesos.

    BrokerMesosError
    ├── ProtocolError        a message could not be decoded or validated (the sender's fault)
    ├── ResourceError        resource arithmetic or parsing went wrong (negative, unknown kind)
    ├── CallRefused          a well-formed call the master refuses (unknown offer, does not fit, ...)
    ├── PolicyError          an allocator policy name or parameter is unknown or invalid
    ├── ConfigError          a process is configured inconsistently (e.g. its principal and its id)
    └── BusError             the transport failed (raised only by ``bus/``, from pika's exceptions)
        └── BrokerUnreachable  no connection could be made to the broker
"""

from __future__ import annotations


class BrokerMesosError(Exception):
    """Base of every error this package raises on purpose."""


class ProtocolError(BrokerMesosError):
    """A message is malformed; ``reason`` is what goes back to the sender and to the dead-letter header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResourceError(BrokerMesosError, ValueError):
    """Resources were parsed from bad text or subtracted below zero."""


class CallRefused(BrokerMesosError):
    """The master refuses a valid call; ``reason`` is sent to the caller as an ERROR event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PolicyError(BrokerMesosError, ValueError):
    """An allocator policy cannot be built: unknown name or bad parameter (the operator's fault)."""


class ConfigError(BrokerMesosError, ValueError):
    """A process cannot start as configured (the operator's fault); said in one line."""


class BusError(BrokerMesosError):
    """The broker connection failed in a way the caller must hear about."""


class BrokerUnreachable(BusError):
    """No connection to the broker could be opened."""
