"""The device twin as the client sees it (the resync bookkeeping is :mod:`aioiothub.protocol.desired`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Twin"]


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
