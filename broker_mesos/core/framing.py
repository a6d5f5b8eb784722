"""Length-prefixed frames for the agent's local executor socket (docs/protocol.md section 17).

A frame is a 4-byte big-endian unsigned length followed by that many bytes: one envelope of the
wire codec (``core.codec``). ``MAX_FRAME_BYTES`` = 1 MiB bounds every frame: a task's ``TaskInfo``
and a ``MAX_DATA_BYTES`` payload fit with room to spare; a longer announced length is a protocol
error and the connection is closed (never buffered). Pure: no sockets here.
"""

from __future__ import annotations

import struct

from broker_mesos.core.errors import ProtocolError

MAX_FRAME_BYTES = 1024 * 1024
_HEADER = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """One frame holding ``payload``; ``ValueError`` if it is longer than ``MAX_FRAME_BYTES``."""
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"a frame holds at most {MAX_FRAME_BYTES} bytes, not {len(payload)}")
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Turns a byte stream into frames: ``feed`` what was read, get back every frame it completed.
    Buffers at most one frame plus a header; raises ``ProtocolError`` for an announced length over
    ``MAX_FRAME_BYTES`` (after which the stream cannot be trusted: close it)."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes announced, more than {self.max_frame}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[_HEADER.size:end]))
            del self._buffer[:end]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)
