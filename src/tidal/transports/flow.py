"""Write flow control shared by every tidal transport that buffers writes.

Owns: the water marks and the pause_writing()/resume_writing() calls to the protocol.
Not here: the buffers themselves (each transport keeps its own and says how big it is through
``_buffer_size``), reading, closing.

Invariant: ``_protocol_paused`` is True exactly between a pause_writing() and the matching
resume_writing(); pause happens when the buffer grows above ``_high_water``, resume when it
drains to ``_low_water`` or below (asyncio's rule and defaults).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..core.errors import FATAL_EXCEPTIONS

# Bytes; asyncio's default high-water mark (the low one defaults to a quarter of the high).
DEFAULT_HIGH_WATER: Final = 64 * 1024


class WriteFlowControl:
    """Mixin (no instance layout) for transports with a write buffer.

    The class using it provides the fields ``_buffer_size`` (bytes queued), ``_high_water``,
    ``_low_water``, ``_protocol_paused``, ``_protocol`` and ``_loop``.
    """

    if not TYPE_CHECKING:  # no layout of its own; mypy checks the fields on the users
        __slots__ = ()

    _buffer_size: int
    _high_water: int
    _low_water: int
    _protocol_paused: bool
    _protocol: Any
    _loop: Any

    def get_write_buffer_size(self) -> int:
        """Bytes queued in the transport, not yet handed to the kernel."""
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """Return ``(low, high)`` water marks in bytes."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the flow-control water marks (asyncio's defaults: 64 KiB and a quarter of it).

        Raises:
            ValueError: unless ``high >= low >= 0``.
        """
        self._set_write_buffer_limits(high, low)
        self._maybe_pause_protocol()

    def _set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        self._call_protocol("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            self._call_protocol("resume_writing")

    def _call_protocol(self, method: str) -> None:
        try:
            getattr(self._protocol, method)()
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{method}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
