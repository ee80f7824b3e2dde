"""Argument checks, encodings and the wake-up primitive that several parts of the hub share."""

from __future__ import annotations

import datetime
import json
import math
import time
from typing import Any, Final

import anyio

from aioiothub.exceptions import CredentialError
from aioiothub.protocol.sas import decode_key

__all__ = [
    "NEVER",
    "Broadcast",
    "check_count",
    "check_key",
    "check_thumbprint",
    "check_ttl",
    "iso_time",
    "json_bytes",
    "now_utc",
    "precise_time",
]

_JSON_SEPARATORS: Final = (",", ":")


def now_utc() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(datetime.UTC)


NEVER: Final = "0001-01-01T00:00:00Z"
"""How IoT Hub writes a time that has not happened (a device never connected, a section never written)."""


def precise_time(moment: datetime.datetime) -> str:
    """``2026-12-07T09:00:00.1234567Z``: a time with seven fractional digits, in UTC, as IoT Hub writes
    connection-state, activity and operation times."""
    utc = moment.astimezone(datetime.UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond:06d}0Z"


def iso_time(moment: datetime.datetime) -> str:
    """``2021-04-21T11:30:16.123Z``: ISO 8601 in UTC with milliseconds, as IoT Hub writes times."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the hub sends it."""
    return json.dumps(value, separators=_JSON_SEPARATORS).encode("utf-8")


def check_count(count: int, argument: str) -> None:
    """Raise :class:`ValueError` naming ``argument`` unless ``count`` is an ``int`` >= 0."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{argument} must be an int >= 0, got {count!r}")


def check_ttl(ttl: float) -> float:
    """Check a time to live in seconds and return the monotonic time it ends at."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return time.monotonic() + ttl


class Broadcast:
    """A wake-up for every current waiter at the next :meth:`notify`.

    Waiters sleep on an :class:`anyio.Event` that :meth:`notify` sets and drops; the next waiter
    creates a fresh one. Nothing is created before someone waits, so the hub can be built outside an
    event loop.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        """Wake everything waiting now."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self) -> None:
        """Sleep until the next :meth:`notify`."""
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


def check_key(key: str, argument: str) -> None:
    """Raise :class:`ValueError` naming ``argument`` unless ``key`` is a base64 shared access key."""
    try:
        decode_key(key)
    except CredentialError as exc:
        raise ValueError(f"{argument}: {exc}") from None


def check_thumbprint(value: object) -> str:
    """A certificate thumbprint (SHA-1 or SHA-256, hex) in upper case, as the registry keeps it.

    Raises:
        ValueError: ``value`` is not one.
    """
    if not isinstance(value, str) or not value or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"thumbprints: {value!r} is not a hexadecimal certificate thumbprint")
    if len(value) not in (40, 64):
        raise ValueError(f"thumbprints: {value!r} is neither a SHA-1 (40) nor a SHA-256 (64) hex digest")
    return value.upper()
