"""Task logs without shared disk: the agent streams bounded chunks of a sandbox's ``stdout`` or ``stderr``
to whoever the master sent (SEND_LOG in, LOG_DATA out on exchange ``logs``; docs/protocol.md §19).

What the agent reads is named by (framework id, task id, file) only, never by a path from the wire: ids
are identifiers (no ``/``, no ``.``), and every step from the work dir down is opened relative to its
parent with ``O_NOFOLLOW``, so a link a task leaves in (or as) its sandbox file is refused, as is a file
with several links (a hard link to someone else's file), a FIFO or a device (``O_NONBLOCK``: opening
never blocks) or a file not owned by the sandbox's owner.

Bounds: one SEND_LOG is answered with at most ``max_bytes`` (``LOG_MAX_WINDOW`` = 4 MiB), in chunks of
``LOG_CHUNK_BYTES`` (256 KiB), one chunk per loop turn (a 4 MiB answer never holds the loop for more
than one 256 KiB ``pread``); at most ``MAX_STREAMS`` answers are in progress at once (more are refused
with an ERROR starting ``busy:``, which the requester retries); ``--tail N`` scans back at most
``TAIL_MAX_SCAN`` bytes. A follower (``bmesos logs -f``) asks again with the next offset: the agent keeps
no state between requests.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus
from broker_mesos.core import codec
from broker_mesos.core.protocol import LOG_BUSY, LOG_CHUNK_BYTES, Error, LogData, LogFile, SendLog

log = logging.getLogger(__name__)

MAX_STREAMS = 16  # answers in progress at once (each at most LOG_MAX_WINDOW bytes)
TAIL_MAX_SCAN = 8 * 1024 * 1024  # bytes scanned back from the end for --tail's lines
TAIL_BLOCK = 64 * 1024
CALL_TYPE = "READ_LOG"


class LogUnavailable(Exception):
    """The file cannot be served; the message says why, for the requester."""


def open_log(work_dir: Path, framework_id: str, task_id: str, file: LogFile) -> int | None:
    """A read-only descriptor of the task's sandbox file, or None if the sandbox (or the file) does not
    exist; ``LogUnavailable`` if it is not a plain file of the sandbox's owner with one link."""
    fd = None
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(work_dir, dir_flags)
        for part in ("frameworks", framework_id, "tasks", task_id):
            parent, fd = fd, None
            try:
                fd = os.open(part, dir_flags, dir_fd=parent)
            finally:
                os.close(parent)
        sandbox_uid = os.fstat(fd).st_uid
        parent, fd = fd, None
        try:
            fd = os.open(file.value, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        finally:
            os.close(parent)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != sandbox_uid:
            raise LogUnavailable(f"the sandbox's {file.value} is not a plain file of the task's user")
    except FileNotFoundError:
        if fd is not None:
            os.close(fd)
        return None
    except OSError as exc:
        if fd is not None:
            os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise LogUnavailable(f"the sandbox's {file.value} (or a directory above it) is a link: refused") from None
        raise LogUnavailable(f"cannot open the sandbox's {file.value}: {exc.strerror}") from None
    except LogUnavailable:
        os.close(fd)  # type: ignore[arg-type]  # set: the error is raised after the file was opened
        raise
    return fd


def tail_offset(fd: int, size: int, lines: int, max_scan: int = TAIL_MAX_SCAN) -> int:
    """Where the last ``lines`` lines of the first ``size`` bytes begin (a last line without its newline
    counts); scanning back at most ``max_scan`` bytes, so at worst the last ``max_scan`` bytes."""
    if lines <= 0 or size <= 0:
        return size
    floor = max(0, size - max_scan)
    end = size
    wanted = lines + 1 if _byte_at(fd, size - 1) == b"\n" else lines  # the final newline ends the last line
    while end > floor:
        start = max(floor, end - TAIL_BLOCK)
        block = os.pread(fd, end - start, start)
        if not block:
            break
        pos = len(block)
        while True:
            pos = block.rfind(b"\n", 0, pos)
            if pos < 0:
                break
            wanted -= 1
            if wanted == 0:
                return start + pos + 1
        end = start
    return floor


def _byte_at(fd: int, offset: int) -> bytes:
    return os.pread(fd, 1, offset)


@dataclass
class _Stream:
    request: SendLog
    correlation_id: str | None
    fd: int
    pos: int
    end: int
    size: int
    ended: bool  # the task was not running before the read began


class LogServer:
    """Answers SEND_LOG for one agent: opens the file, then publishes one chunk per loop turn."""

    def __init__(self, bus: Bus, work_dir: Path, agent_id: str, running: Callable[[str, str], bool],
                 max_streams: int = MAX_STREAMS) -> None:
        self.bus = bus
        self.work_dir = work_dir
        self.agent_id = agent_id
        self.running = running
        self.max_streams = max_streams
        self._streams: list[_Stream] = []

    def __len__(self) -> int:
        return len(self._streams)

    def serve(self, request: SendLog, correlation_id: str | None) -> None:
        """Start answering ``request`` (never raises: problems go to the requester as ERROR)."""
        if len(self._streams) >= self.max_streams:
            self._error(request, correlation_id, f"{LOG_BUSY} agent {self.agent_id} has {len(self._streams)} log reads "
                                                 "in progress; try again")
            return
        ended = not self.running(request.framework_id, request.task_id)  # before the read: then all is written
        try:
            fd = open_log(self.work_dir, request.framework_id, request.task_id, request.file)
        except LogUnavailable as exc:
            self._error(request, correlation_id, str(exc))
            return
        if fd is None:
            if ended:
                self._error(request, correlation_id, f"the sandbox of task {request.task_id} was removed from agent "
                                                     f"{self.agent_id} (garbage-collected), or never made")
            else:  # launched, sandbox not made yet: nothing written so far
                self._publish(request, correlation_id, LogData(request.framework_id, request.task_id, self.agent_id,
                                                               request.file, 0, 0, b"", last=True))
            return
        try:
            size = os.fstat(fd).st_size
            if request.tail_lines is not None:
                start = tail_offset(fd, size, request.tail_lines)
            else:
                start = min(request.offset, size)
        except OSError as exc:
            os.close(fd)
            self._error(request, correlation_id, f"cannot read the sandbox's {request.file.value}: {exc.strerror}")
            return
        stream = _Stream(request, correlation_id, fd, start, min(size, start + request.max_bytes), size, ended)
        self._streams.append(stream)
        self._step(stream)

    def close(self) -> None:
        for stream in self._streams:
            with contextlib.suppress(OSError):
                os.close(stream.fd)
        self._streams.clear()

    def _step(self, stream: _Stream) -> None:
        """Publish the next chunk; schedule the one after it on the next loop turn."""
        if stream not in self._streams:
            return
        request = stream.request
        try:
            data = os.pread(stream.fd, min(LOG_CHUNK_BYTES, stream.end - stream.pos), stream.pos)
        except OSError as exc:
            self._finish(stream)
            self._error(request, stream.correlation_id, f"cannot read the sandbox's {request.file.value}: "
                                                        f"{exc.strerror}")
            return
        offset = stream.pos
        stream.pos += len(data)
        last = stream.pos >= stream.end or not data  # not data: truncated under us
        done = last and stream.ended and stream.pos >= stream.size
        self._publish(request, stream.correlation_id, LogData(request.framework_id, request.task_id, self.agent_id,
                                                              request.file, offset, stream.size, data, last, done))
        if last:
            self._finish(stream)
        else:
            self.bus.call_later(0, lambda: self._step(stream))

    def _finish(self, stream: _Stream) -> None:
        self._streams.remove(stream)
        with contextlib.suppress(OSError):
            os.close(stream.fd)

    def _publish(self, request: SendLog, correlation_id: str | None, body: LogData | Error) -> None:
        self.bus.publish(topology.LOGS, request.reply_key, codec.encode(body, time.time()), persistent=False,
                         correlation_id=correlation_id)

    def _error(self, request: SendLog, correlation_id: str | None, message: str) -> None:
        log.info("agent %s: log of task=%s framework=%s not sent: %s", self.agent_id, request.task_id,
                 request.framework_id, message)
        self._publish(request, correlation_id, Error(message, CALL_TYPE, correlation_id or ""))
