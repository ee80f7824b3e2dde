"""Desired properties without loss or repetition: the resync state machine and the merge diff.

Theory of operation
-------------------
IoT Hub sends a desired-property notification only while the device is connected and subscribed,
and a client that cannot hand a notification to its consumer must not simply drop it. So the
application's view of the desired section is tracked here, and anything that may have been missed
is recovered by reading the twin and delivering the difference as one synthetic patch.

The rule the application can rely on: patches come in strictly increasing ``$version`` order --
never one at or below a version already delivered -- and nothing is lost. A resync (a twin reading
after a reconnect, or after the consumer fell behind) delivers at most one patch, the difference up
to the twin's version; notifications that arrive while it is under way are held and delivered after
it, in version order, when they are newer than the reading (older ones are covered by it).

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
    Notifications are held (up to ``hold_limit`` of them; the versions of any beyond are
    remembered) until a twin reading completes. Then its difference from what the application saw
    is delivered, followed by the held notifications newer than the reading; if one that could not
    be held or delivered was newer still, the twin is read again. Then ``LIVE``.

Transitions: ``want()`` OFF→BASELINE; ``baseline_read()`` BASELINE→LIVE, or →STALE when the
connection was restored during the reading; ``connection_restored()`` LIVE→STALE and
``notification(room=False)`` BASELINE|LIVE→STALE; ``resync_read()`` STALE→LIVE unless a newer
notification was lost or the connection was restored while it was under way.

Delivery is decided and handed over in one step: :meth:`DesiredSync.resync_read` is told how much
room the consumer's buffer has and returns exactly what fits, so the caller queues it without
waiting -- a notification handled in between could otherwise be queued ahead of an older patch.
The caller performs the twin readings that :attr:`DesiredSync.needs_reading` asks for; nothing
here does I/O or reads a clock.
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
        held: the notifications held during the reading that are newer than it, oldest first.
        read_again: a notification newer than what is delivered was lost meanwhile (or the
            connection was restored during the reading): the twin must be read again.
    """

    patch: dict[str, Any] | None
    read_again: bool
    held: tuple[dict[str, Any], ...] = ()

    @property
    def patches(self) -> list[dict[str, Any]]:
        """Everything to queue for the consumer, in this order: the synthetic patch, then the held ones."""
        return ([] if self.patch is None else [self.patch]) + list(self.held)


def _version_of(section: dict[str, Any]) -> int | None:
    version = section.get("$version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


class DesiredSync:
    """The application's view of the desired section, and when it must be re-read from the twin.

    Args:
        hold_limit: how many notifications ``STALE`` holds for delivery after the reading (the
            consumer's buffer size is a natural bound); beyond it their versions are remembered and
            recovered by another reading.
    """

    __slots__ = (
        "_document",
        "_held",
        "_hold_limit",
        "_missed_version",
        "_reconnected_during_reading",
        "_state",
        "_version",
    )

    def __init__(self, *, hold_limit: int = 64) -> None:
        if hold_limit < 0:
            raise ValueError("hold_limit must not be negative")
        self._state = DesiredState.OFF
        self._version: int | None = None
        self._document: dict[str, Any] | None = None
        self._missed_version: int | None = None
        self._hold_limit = hold_limit
        self._held: list[dict[str, Any]] = []
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
            self._hold(patch, version)
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

    def _hold(self, patch: dict[str, Any], version: int | None) -> None:
        if self._version is not None and version is not None and version <= self._version:
            return  # the application has seen it already
        if len(self._held) < self._hold_limit:
            self._held.append(patch)
        else:
            self._miss(version)

    def _miss(self, version: int | None) -> None:
        if version is not None:
            self._missed_version = version if self._missed_version is None else max(self._missed_version, version)

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
        """A resync reading is about to be sent: forget what was missed before it (the reading covers it)."""
        self._missed_version = None
        self._reconnected_during_reading = False

    def resync_read(self, desired: dict[str, Any], *, room: int) -> ResyncResult:
        """Adopt a twin reading taken in ``STALE``; returns what to queue for the consumer now.

        Args:
            desired: the desired section the reading returned.
            room: how many items the consumer's buffer takes now. At most that many patches are
                returned; the held notifications that do not fit are recovered by another reading.
        """
        version = _version_of(desired)
        held, self._held = self._held, []
        patch: dict[str, Any] | None = None
        if self._document is None:
            self._document = {key: value for key, value in desired.items() if not key.startswith("$")}
            if version is not None and (self._version is None or version > self._version):
                self._version = version
        elif version is None or self._version is None or version > self._version:
            if room > 0:
                document = {key: value for key, value in desired.items() if not key.startswith("$")}
                patch = merge_diff(self._document, document)
                self._document = document
                self._version = version
                patch["$version"] = version
                room -= 1
            else:
                self._miss(version)
        delivered: list[dict[str, Any]] = []
        for notification in _newest_last(held):
            notified = _version_of(notification)
            if notified is not None and self._version is not None and notified <= self._version:
                continue  # covered by the reading
            if room <= 0:
                self._miss(notified)
                continue
            if notified is not None:
                self._version = notified
            self._document = merge_patch(self._document, notification)
            delivered.append(notification)
            room -= 1
        missed = self._missed_version
        read_again = self._reconnected_during_reading or (
            missed is not None and (self._version is None or missed > self._version)
        )
        if not read_again:
            self._state = DesiredState.LIVE
            self._missed_version = None
        return ResyncResult(patch, read_again, tuple(delivered))


def _newest_last(held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Held notifications in version order (those without a version keep their place after the rest)."""
    versioned = sorted((patch for patch in held if _version_of(patch) is not None), key=lambda p: _version_of(p) or 0)
    return versioned + [patch for patch in held if _version_of(patch) is None]
