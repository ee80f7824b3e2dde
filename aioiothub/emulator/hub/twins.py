"""Device and module twins: desired and reported properties with their versions, and the twin topics.

Theory of operation
-------------------
Each identity has one twin with two sections, ``desired`` and ``reported``, each with its own
``$version`` starting at 1. A change is a JSON merge patch: it is validated against IoT Hub's twin
rules (keys, depth, string and integer limits), merged into a copy, and the copy's size checked;
only then does it replace the section and bump its version, so a refused patch changes nothing.

Beside the two sections a twin has ``tags``, which only the service reads and writes, and a twin
``version`` bumped by every change, from which the service API derives the twin's etag
(:func:`twin_etag`). Every change is reported to the
:class:`~aioiothub.emulator.hub.observer.StateObserver`, and, when twin changes are routed to the
built-in endpoint, to :attr:`Twins.changes` (:mod:`.notifications`), which hears what each change
patched or replaced.

The service changes ``desired`` (:meth:`Twins.update_desired`, :meth:`Twins.update`,
:meth:`Twins.replace`); the patch, with its new
``$version``, is published to the identity's connection if it holds the desired-properties
subscription -- notifications are not queued for an offline device. Devices read the twin and patch
``reported`` over MQTT (:meth:`Twins.serve`); injected faults (:mod:`.faults`) are consulted first,
and a body that is not a JSON object, or breaks the rules, is answered 400.
"""

from __future__ import annotations

import base64
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aioiothub.emulator.hub.connections import ConnectionTable
from aioiothub.emulator.hub.errors import RuleViolation
from aioiothub.emulator.hub.faults import Faults
from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.observer import NO_OBSERVER, StateObserver
from aioiothub.emulator.hub.values import json_bytes
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.json_payloads import load_json_object
from aioiothub.protocol.topics import TWIN_DESIRED_SUBSCRIPTION, TwinRequestTopic, twin_desired_topic
from aioiothub.protocol.twin import merge_patch, validate_patch, validate_section_size

__all__ = ["TwinAnswer", "TwinChanges", "Twins", "twin_etag"]

logger = logging.getLogger("aioiothub.emulator")

TwinAnswer = tuple[int, bytes, int | None]
"""``(status, response body, new reported version or None)``: the answer to one twin request."""


def twin_etag(version: int) -> str:
    """The twin's etag: its version as eight big-endian bytes in base64, as IoT Hub writes it."""
    return base64.b64encode(version.to_bytes(8, "big")).decode("ascii")


class TwinChanges(Protocol):
    """Hears each twin change as a patch or a replacement (:class:`~.notifications.Notifications`)."""

    def twin_updated(
        self,
        key: IdentityKey,
        version: int,
        *,
        tags: Mapping[str, Any] | None = None,
        desired: tuple[Mapping[str, Any], int] | None = None,
        reported: tuple[Mapping[str, Any], int] | None = None,
    ) -> None:
        """Sections were patched; ``desired`` and ``reported`` come with their new ``$version``."""

    def twin_replaced(self, key: IdentityKey, state: Mapping[str, Any]) -> None:
        """The tags and desired properties were replaced; ``state`` is the whole twin."""


@dataclass(slots=True, eq=False)
class _Twin:
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported_version: int = 1
    tags: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    def state(self) -> dict[str, Any]:
        return {
            "tags": self.tags,
            "desired": self.desired,
            "reported": self.reported,
            "desired_version": self.desired_version,
            "reported_version": self.reported_version,
            "version": self.version,
        }

    def document(self) -> dict[str, Any]:
        return {
            "desired": {**self.desired, "$version": self.desired_version},
            "reported": {**self.reported, "$version": self.reported_version},
        }


class Twins:
    """The twins of one hub.

    Args:
        connections: where desired-property notifications go.
        faults: the twin-request faults to apply.
    """

    __slots__ = ("_connections", "_faults", "_twins", "changes", "observer")

    def __init__(self, connections: ConnectionTable, faults: Faults) -> None:
        self._connections = connections
        self._faults = faults
        self._twins: dict[IdentityKey, _Twin] = {}
        #: Told of every change (see :mod:`aioiothub.emulator.storage.state_store`).
        self.observer: StateObserver = NO_OBSERVER
        #: Told what each change patched or replaced, when twin changes are routed (else ``None``).
        self.changes: TwinChanges | None = None

    def add(self, key: IdentityKey) -> None:
        """Give a newly registered identity its empty twin."""
        self._twins[key] = twin = _Twin()
        self.observer.twin_saved(key, twin.state())

    def remove(self, key: IdentityKey) -> None:
        """Forget the twin of a deleted identity."""
        self._twins.pop(key, None)

    def state(self, key: IdentityKey) -> dict[str, Any]:
        """A deep copy of the whole twin: ``tags``, ``desired``, ``reported``, their versions and ``version``."""
        return copy.deepcopy(self._twins[key].state())

    def restore(self, key: IdentityKey, state: Mapping[str, Any]) -> None:
        """Put back a twin loaded from a store (the form :meth:`state` returns)."""
        self._twins[key] = _Twin(
            desired=dict(state["desired"]),
            reported=dict(state["reported"]),
            desired_version=int(state["desired_version"]),
            reported_version=int(state["reported_version"]),
            tags=dict(state["tags"]),
            version=int(state["version"]),
        )

    def _saved(self, key: IdentityKey, twin: _Twin) -> None:
        twin.version += 1
        self.observer.twin_saved(key, twin.state())

    async def update(
        self, identity: Identity, *, tags: Mapping[str, Any] | None, desired: Mapping[str, Any] | None
    ) -> None:
        """Merge patches into the tags and the desired properties at once (the service's twin PATCH).

        Raises:
            TypeError: a patch is not a mapping.
            ValueError: a patch breaks the twin rules; the twin is unchanged then.
        """
        twin = self._twins[identity.key]
        new_tags = self._merged(twin.tags, tags, "tags")
        new_desired = self._merged(twin.desired, desired, "desired")
        twin.tags = new_tags
        if desired:
            self._set_desired(identity, twin, new_desired)
        else:
            self._saved(identity.key, twin)
        version = twin.desired_version
        if self.changes is not None and (tags or desired):
            self.changes.twin_updated(
                identity.key, twin.version, tags=tags or None, desired=(desired, version) if desired else None
            )
        if desired:
            await self._notify_desired(identity, desired, version)

    async def replace(self, identity: Identity, *, tags: Mapping[str, Any], desired: Mapping[str, Any]) -> None:
        """Replace the tags and the desired properties (the service's twin PUT).

        The device is sent a patch that turns its old desired properties into the new ones.

        Raises:
            TypeError: a section is not a mapping.
            ValueError: a section breaks the twin rules; the twin is unchanged then.
        """
        twin = self._twins[identity.key]
        new_tags = self._merged({}, tags, "tags")
        new_desired = self._merged({}, desired, "desired")
        patch: dict[str, Any] = {name: None for name in twin.desired if name not in new_desired}
        patch.update((name, value) for name, value in new_desired.items() if twin.desired.get(name) != value)
        twin.tags = new_tags
        if patch:
            self._set_desired(identity, twin, new_desired)
        else:
            self._saved(identity.key, twin)
        version = twin.desired_version
        if self.changes is not None:
            self.changes.twin_replaced(identity.key, twin.state())
        if patch:
            await self._notify_desired(identity, patch, version)

    @staticmethod
    def _merged(section: dict[str, Any], patch: Mapping[str, Any] | None, argument: str) -> dict[str, Any]:
        if patch is None:
            return section
        if not isinstance(patch, Mapping):
            raise TypeError(f"{argument} must be a mapping, not {type(patch).__name__}")
        patch = {name: value for name, value in patch.items() if name not in ("$version", "$metadata")}
        validate_patch(patch, argument=argument)
        merged = merge_patch(section, patch)
        validate_section_size(merged, argument=argument)
        return merged

    def document(self, key: IdentityKey) -> dict[str, Any]:
        """A deep copy of the identity's twin properties."""
        return copy.deepcopy(self._twins[key].document())

    async def update_desired(self, identity: Identity, patch: Mapping[str, Any]) -> int:
        """Apply a desired-properties merge patch and notify the identity if it listens.

        Returns:
            The new desired ``$version``.

        Raises:
            TypeError: the patch is not a mapping.
            ValueError: the patch breaks the twin rules; the twin is unchanged then.
        """
        if not isinstance(patch, Mapping):
            raise TypeError(f"patch must be a mapping, not {type(patch).__name__}")
        validate_patch(patch, argument="patch")
        twin = self._twins[identity.key]
        merged = merge_patch(twin.desired, patch)
        validate_section_size(merged, argument="patch")
        version = self._set_desired(identity, twin, merged)
        if self.changes is not None:
            self.changes.twin_updated(identity.key, twin.version, desired=(patch, version))
        await self._notify_desired(identity, patch, version)
        return version

    def _set_desired(self, identity: Identity, twin: _Twin, merged: dict[str, Any]) -> int:
        twin.desired = merged
        twin.desired_version += 1
        self._saved(identity.key, twin)
        return twin.desired_version

    async def _notify_desired(self, identity: Identity, patch: Mapping[str, Any], version: int) -> None:
        # Notifications are not queued: only a connection holding the subscription now hears of it.
        connection = self._connections.get(identity.key)
        if connection is not None and connection.is_subscribed(TWIN_DESIRED_SUBSCRIPTION):
            await connection.publish(twin_desired_topic(version), json_bytes({**patch, "$version": version}))

    def serve(self, identity: Identity, request: TwinRequestTopic, body: bytes) -> TwinAnswer | None:
        """Serve a twin GET or reported-properties PATCH from a device.

        Returns:
            The answer, or ``None`` when the request is to go unanswered (an ignore fault).

        Raises:
            RuleViolation: a drop fault asks for the connection to be dropped.
        """
        fault = self._faults.take_twin_fault()
        if fault is not None:
            if fault.action == "drop":
                raise RuleViolation(f"dropped on twin request {request.request_id!r} by drop_on_twin_requests()")
            if fault.action == "ignore":
                logger.info("%s: twin request %r ignored by ignore_twin_requests()", identity.label, request.request_id)
                return None
            return fault.status, b"", None
        twin = self._twins[identity.key]
        if request.operation == "GET":
            return 200, json_bytes(twin.document()), None
        try:
            patch = load_json_object(body, "reported properties patch")
            validate_patch(patch, argument="reported")
            merged = merge_patch(twin.reported, patch)
            validate_section_size(merged, argument="reported")
        except (ProtocolError, ValueError) as exc:
            logger.info("%s: reported PATCH refused: %s", identity.label, exc)
            return 400, b"", None
        twin.reported = merged
        twin.reported_version += 1
        self._saved(identity.key, twin)
        if self.changes is not None:
            self.changes.twin_updated(identity.key, twin.version, reported=(patch, twin.reported_version))
        return 204, b"", twin.reported_version
