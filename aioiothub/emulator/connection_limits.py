"""The limits every MQTT connection to the emulator lives under, device and DPS alike."""

from __future__ import annotations

from typing import Final

__all__ = ["CONNECT_TIMEOUT", "MAX_BYTES_BEFORE_CONNECT", "WRITE_TIMEOUT"]

CONNECT_TIMEOUT: Final = 10.0
"""Seconds a new connection may take to send its CONNECT."""

MAX_BYTES_BEFORE_CONNECT: Final = 64 * 1024
"""Bytes a new connection may send before its CONNECT is complete (one with the longest SAS token is
far smaller); beyond that only this connection is closed."""

WRITE_TIMEOUT: Final = 30.0
"""Seconds a write may wait for a client that does not read before the connection is closed."""
