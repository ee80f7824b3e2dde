"""The device twin as the client sees it, and the bookkeeping that keeps desired patches lossless."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from aioiothub.protocol.twin import merge_patch

__all__ = ["DesiredPropertyTracker", "Twin", "merge_diff"]


@dataclass(frozen=True, slots=True)
class Twin:
    """A device or module twin: the desired and reported sections, each with its ``$version``.

    Example:
        >>> twin = Twin(desired={"interval": 5, "$version": 3}, reported={"$version": 1})
        >>> twin.desired_version
        3
    """

    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)

    @property
    def desired_version(self) -> int | None:
        """The ``$version`` of the desired section (``None`` if the hub sent none)."""
        version = self.desired.get("$version")
        return version if isinstance(version, int) else None

    @property
    def reported_version(self) -> int | None:
        """The ``$version`` of the reported section (``None`` if the hub sent none)."""
        version = self.reported.get("$version")
        return version if isinstance(version, int) else None


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


class DesiredPropertyTracker:
    """Knows the desired document the application has seen, so that nothing is lost or repeated.

    IoT Hub sends desired-property notifications only while a device is connected. After a
    reconnect (or after a consumer fell behind and notifications were dropped) the client reads
    the twin again; :meth:`resync` turns what changed meanwhile into one synthetic patch, and
    :meth:`accept` drops notifications that the application has already seen.
    """

    __slots__ = ("_document", "_version")

    def __init__(self) -> None:
        self._version: int | None = None
        self._document: dict[str, Any] | None = None

    @property
    def version(self) -> int | None:
        """The desired ``$version`` the application has seen, if known."""
        return self._version

    def accept(self, patch: dict[str, Any]) -> bool:
        """Record a notification; ``False`` when it is not newer than what was already seen."""
        version = patch.get("$version")
        if isinstance(version, int):
            if self._version is not None and version <= self._version:
                return False
            self._version = version
        if self._document is not None:
            self._document = merge_patch(self._document, patch)
        return True

    def resync(self, desired: dict[str, Any]) -> dict[str, Any] | None:
        """Adopt the full desired section read from the twin.

        Returns:
            The patch to give the application when the section moved past what it has seen, with
            ``"$version"`` set; ``None`` when nothing changed or this is the first reading (which
            only sets the baseline).
        """
        version = desired.get("$version")
        version = version if isinstance(version, int) else None
        document = {key: value for key, value in desired.items() if not key.startswith("$")}
        if self._document is None:
            self._document = document
            if version is not None and (self._version is None or version > self._version):
                self._version = version
            return None
        if version is not None and self._version is not None and version <= self._version:
            return None
        patch = merge_diff(self._document, document)
        self._document = document
        self._version = version
        patch["$version"] = version
        return patch
