"""Length-prefixed JSON frames exchanged between the caller and sandbox workers.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON.
Only the standard library is used so the worker can import this before anything else.
"""
from __future__ import annotations

import json
import os
import struct

_HDR = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # refuse absurd frames rather than allocating them


def encode(obj) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return _HDR.pack(len(data)) + data


class FrameReader:
    """Incremental decoder: ``feed`` raw bytes, then pop complete messages with ``pop``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> bool:
        """Are there bytes of a next message (complete or not) already buffered?"""
        return bool(self._buf)

    def pop(self):
        """Return the next complete decoded message, or ``None`` if none is complete yet."""
        if len(self._buf) < 4:
            return None
        (n,) = _HDR.unpack_from(self._buf, 0)
        if n > MAX_FRAME:
            raise ValueError(f"frame too large: {n} bytes")
        if len(self._buf) < 4 + n:
            return None
        data = bytes(self._buf[4:4 + n])
        del self._buf[:4 + n]
        return json.loads(data.decode("utf-8", "surrogatepass"))


def write_all(fd: int, data: bytes) -> None:
    """Blocking write of the whole buffer (used by the worker, whose control fd is blocking)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
