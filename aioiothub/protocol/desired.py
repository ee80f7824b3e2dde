"""Desired properties without loss or repetition: the resync state machine and the merge diff.

Theory of operation
-------------------
IoT Hub sends a desired-property notification only while the device is connected and subscribed,
and a client that cannot hand a notification to its consumer must not simply drop it. So the
application's view of the desired section is tracked here, and anything that may have been missed
is recovered by reading the twin and delivering the difference as one synthetic patch.

:class:`DesiredSync` has four states:

``OFF``
    Nobody iterates over desired patches; notifications are ignored.
``BASELINE``
    The first consumer appeared: the client subscribed and reads the twin once to learn the
    document. Notifications that arrive meanwhile are delivered (the reading only sets the
    baseline; a notification at or below its ``$version`` is dropped afterwards).
``LIVE``
    Every notification newer than what the application saw is delivered.
``STALE``
    A reconnect happened, or the consumer fell behind and a notification could not be queued.
    Notifications are dropped (their versions remembered) until a twin reading completes; its
    difference from what the application saw is delivered, and if a dropped notification was newer
    than that reading, the twin is read again. Then ``LIVE``.

Transitions: ``want()`` OFF→BASELINE; ``baseline_read()`` BASELINE→LIVE, or →STALE when the
connection was restored during the reading; ``connection_restored()`` LIVE→STALE and
``notification(room=False)`` BASELINE|LIVE→STALE; ``resync_read()`` STALE→LIVE unless a newer
notification was dropped or the connection was restored while it was under way. The caller performs the twin readings
that :meth:`DesiredSync.needs_reading` asks for; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass
from typing import Any

from aioiothub.protocol.twin import merge_patch

__all__ = ["DesiredState", "DesiredSync", "NotificationOutcome", "merge_diff"]

_MISSING = object()


def merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``old`` into ``new`` (``None`` marks a deleted key).

    Example:
        >>> merge_diff({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2, "d": 4}, "e": 5})
        {'a': None, 'b': {'d': 4}, 'e': 5}
    """
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, new_value in new.items():
        old_value = old.get(key, _MISSING)
        if isinstance(new_value, dict) and isinstance(old_value, dict):
            nested = merge_diff(old_value, new_value)
            if nested:
                patch[key] = nested
        elif old_value is _MISSING or old_value != new_value or type(old_value) is not type(new_value):
            patch[key] = copy.deepcopy(new_value)
    return patch


class DesiredState(enum.Enum):
    """Where :class:`DesiredSync` is (see the module docstring)."""

    OFF = "off"
    BASELINE = "baseline"
    LIVE = "live"
    STALE = "stale"


class NotificationOutcome(enum.Enum):
    """What to do with a desired-property notification."""

    DELIVER = "deliver"
    """Hand it to the consumer."""
    DROP = "drop"
    """Nothing to do: not wanted, already seen, or to be recovered by a twin reading."""
    READ_TWIN = "read twin"
    """It could not be delivered: start a twin reading (unless one is already running)."""


@dataclass(frozen=True, slots=True)
class ResyncResult:
    """The outcome of a twin reading in ``STALE``.

    Attributes:
        patch: what changed since the application last saw the section (with ``"$version"``), or
            ``None`` when nothing did.
        read_again: a notification newer than this reading was dropped meanwhile.
    """

    patch: dict[str, Any] | None
    read_again: bool


def _version_of(section: dict[str, Any]) -> int | None:
    version = section.get("$version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


class DesiredSync:
    """The application's view of the desired section, and when it must be re-read from the twin."""

    __slots__ = ("_document", "_missed_version", "_reconnected_during_reading", "_state", "_version")

    def __init__(self) -> None:
        self._state = DesiredState.OFF
        self._version: int | None = None
        self._document: dict[str, Any] | None = None
        self._missed_version: int | None = None
        # A reading answered just before a drop cannot cover what the hub sent during the outage.
        self._reconnected_during_reading = False

    @property
    def state(self) -> DesiredState:
        """The current state."""
        return self._state

    @property
    def version(self) -> int | None:
        """The desired ``$version`` the application has seen, if known."""
        return self._version

    @property
    def needs_reading(self) -> bool:
        """Whether a twin reading is due (the first one, or a resync)."""
        return self._state in (DesiredState.BASELINE, DesiredState.STALE)

    def want(self) -> bool:
        """A consumer appeared; ``True`` the first time (subscribe and read the baseline)."""
        if self._state is not DesiredState.OFF:
            return False
        self._state = DesiredState.BASELINE
        return True

    def notification(self, patch: dict[str, Any], *, room: bool) -> NotificationOutcome:
        """Decide about one notification (``patch`` includes ``"$version"`` when the hub sent one).

        Args:
            patch: the decoded notification body.
            room: whether the consumer's buffer can take it now.
        """
        state = self._state
        if state is DesiredState.OFF:
            return NotificationOutcome.DROP
        version = _version_of(patch)
        if state is DesiredState.STALE or not room:
            if version is not None:
                self._missed_version = version if self._missed_version is None else max(self._missed_version, version)
            if state is DesiredState.STALE:
                return NotificationOutcome.DROP
            self._state = DesiredState.STALE
            return NotificationOutcome.READ_TWIN
        if version is not None:
            if self._version is not None and version <= self._version:
                return NotificationOutcome.DROP
            self._version = version
        if self._document is not None:
            self._document = merge_patch(self._document, patch)
        return NotificationOutcome.DELIVER

    def connection_restored(self) -> bool:
        """A new connection is up; ``True`` when a resync reading must start (notifications were missed).

        A reading already under way (the baseline or a resync) is not enough: its answer may
        predate the outage, so it will be followed by another.
        """
        if self._state is DesiredState.LIVE:
            self._state = DesiredState.STALE
            self._missed_version = None
            return True
        if self._state is not DesiredState.OFF:
            self._reconnected_during_reading = True
        return False

    def baseline_read(self, desired: dict[str, Any]) -> bool:
        """Adopt the first reading of the desired section as the baseline.

        Returns:
            ``True`` when a resync reading must follow (the connection was restored, or a
            notification could not be delivered, while this reading was under way).
        """
        document = {key: value for key, value in desired.items() if not key.startswith("$")}
        version = _version_of(desired)
        self._document = document
        if version is not None and (self._version is None or version > self._version):
            self._version = version
        if self._state is DesiredState.BASELINE:
            if not self._reconnected_during_reading:
                self._state = DesiredState.LIVE
                return False
            self._state = DesiredState.STALE
        return self._state is DesiredState.STALE

    def begin_resync_read(self) -> None:
        """A resync reading is about to be sent: forget what was missed before it."""
        self._missed_version = None
        self._reconnected_during_reading = False

    def resync_read(self, desired: dict[str, Any]) -> ResyncResult:
        """Adopt a twin reading taken in ``STALE``; returns the patch to deliver, if any."""
        version = _version_of(desired)
        missed = self._missed_version
        read_again = self._reconnected_during_reading or (missed is not None and (version is None or missed > version))
        if not read_again:
            self._state = DesiredState.LIVE
        if self._document is None:
            self._document = {key: value for key, value in desired.items() if not key.startswith("$")}
            if version is not None and (self._version is None or version > self._version):
                self._version = version
            return ResyncResult(None, read_again)
        if version is not None and self._version is not None and version <= self._version:
            return ResyncResult(None, read_again)
        document = {key: value for key, value in desired.items() if not key.startswith("$")}
        patch = merge_diff(self._document, document)
        self._document = document
        self._version = version
        patch["$version"] = version
        return ResyncResult(patch, read_again)
