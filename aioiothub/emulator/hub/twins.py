"""Device and module twins: desired and reported properties with their versions, and the twin topics.

Theory of operation
-------------------
Each identity has one twin with two sections, ``desired`` and ``reported``, each with its own
``$version`` starting at 1. A change is a JSON merge patch: it is validated against IoT Hub's twin
rules (keys, depth, string and integer limits), merged into a copy, and the copy's size checked;
only then does it replace the section and bump its version, so a refused patch changes nothing.

The service changes ``desired`` (:meth:`Twins.update_desired`); the patch, with its new
``$version``, is published to the identity's connection if it holds the desired-properties
subscription -- notifications are not queued for an offline device. Devices read the twin and patch
``reported`` over MQTT (:meth:`Twins.serve`); injected faults (:mod:`.faults`) are consulted first,
and a body that is not a JSON object, or breaks the rules, is answered 400.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aioiothub.emulator.hub.connections import ConnectionTable
from aioiothub.emulator.hub.errors import RuleViolation
from aioiothub.emulator.hub.faults import Faults
from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.values import json_bytes
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.json_payloads import load_json_object
from aioiothub.protocol.topics import TWIN_DESIRED_SUBSCRIPTION, TwinRequestTopic, twin_desired_topic
from aioiothub.protocol.twin import merge_patch, validate_patch, validate_section_size

__all__ = ["TwinAnswer", "Twins"]

logger = logging.getLogger("aioiothub.emulator")

TwinAnswer = tuple[int, bytes, int | None]
"""``(status, response body, new reported version or None)``: the answer to one twin request."""


@dataclass(slots=True, eq=False)
class _Twin:
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported_version: int = 1

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

    __slots__ = ("_connections", "_faults", "_twins")

    def __init__(self, connections: ConnectionTable, faults: Faults) -> None:
        self._connections = connections
        self._faults = faults
        self._twins: dict[IdentityKey, _Twin] = {}

    def add(self, key: IdentityKey) -> None:
        """Give a newly registered identity its empty twin."""
        self._twins[key] = _Twin()

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
        twin.desired = merged
        twin.desired_version += 1
        version = twin.desired_version
        connection = self._connections.get(identity.key)
        if connection is not None and connection.is_subscribed(TWIN_DESIRED_SUBSCRIPTION):
            await connection.publish(twin_desired_topic(version), json_bytes({**patch, "$version": version}))
        return version

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
        return 204, b"", twin.reported_version
