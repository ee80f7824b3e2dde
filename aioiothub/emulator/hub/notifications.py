"""Twin-change and device-lifecycle notifications on the built-in endpoint, behind IoT Hub's route data sources.

Theory of operation
-------------------
A new IoT hub, with no routes, sends only device messages to its built-in ``events`` endpoint. A
route from the data source ``TwinChangeEvents`` or ``DeviceLifecycleEvents`` to ``events`` adds the
notifications IoT Hub emits when a twin changes or an identity is created or deleted. The emulator's
``event_sources`` option names the data sources so routed (:data:`ROUTE_SOURCES`; the default is
:data:`DEFAULT_EVENT_SOURCES`), and :func:`check_event_sources` checks it.

:class:`Notifications` builds each notification as IoT Hub's non-telemetry event schema describes it
and appends it to the :class:`~aioiothub.emulator.hub.event_log.EventLog`, in the partition of the
device it is about, so that a back end reads it beside that device's telemetry:

* system properties: content type ``application/json``, encoding ``utf-8``, a fresh correlation id
  and the hub's name as user id; annotations ``iothub-connection-device-id`` (and ``-module-id`` for
  a module) and ``iothub-message-source`` = ``twinChangeEvents`` or ``deviceLifecycleEvents``;
* application properties ``hubName`` (the host name's first label), ``deviceId``, ``moduleId`` (for
  a module), ``operationTimestamp`` (ISO 8601, UTC), ``iothub-message-schema``
  (``twinChangeNotification``, ``deviceLifecycleNotification`` or, for a module,
  ``moduleLifecycleNotification``) and ``opType`` (``updateTwin``, ``replaceTwin``,
  ``createDeviceIdentity``, ``deleteDeviceIdentity``, ``createModuleIdentity``, ``deleteModuleIdentity``);
* body: for ``updateTwin`` the twin's ``version`` and what changed (``tags`` as patched, and
  ``properties.desired`` or ``properties.reported`` with the patch, its ``$metadata`` and ``$version``);
  for ``replaceTwin`` and lifecycle events the whole twin (``deviceId``, ``moduleId``, ``etag``,
  ``version``, ``tags``, ``properties``).

The emulator keeps no per-property update times, so ``$metadata`` stamps what an event changed with
the operation's time, and a section shown whole with ``$lastUpdated`` only: ``0001-01-01T00:00:00Z``
for a section never written (as IoT Hub writes a new twin), else the operation's time.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

from aioiothub.emulator.hub.event_log import EventLog, MessageSource
from aioiothub.emulator.hub.identity import IdentityKey
from aioiothub.emulator.hub.telemetry import TelemetryRecord
from aioiothub.emulator.hub.twins import twin_etag
from aioiothub.emulator.hub.values import NEVER, json_bytes, now_utc, precise_time

__all__ = [
    "DEFAULT_EVENT_SOURCES",
    "ROUTE_SOURCES",
    "Notifications",
    "RouteSource",
    "check_event_sources",
    "section_metadata",
]

RouteSource = Literal["DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents"]
"""A route data source the emulator can send to the built-in endpoint, under IoT Hub's name for it."""

ROUTE_SOURCES: Final[tuple[RouteSource, ...]] = ("DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents")
"""Every data source ``event_sources`` accepts."""

DEFAULT_EVENT_SOURCES: Final[tuple[RouteSource, ...]] = ("DeviceMessages",)
"""What a new hub, without routes, sends to the built-in endpoint: device messages only."""

def check_event_sources(value: object, argument: str = "event_sources") -> frozenset[str]:
    """The route data sources ``value`` names, checked.

    Example:
        >>> sorted(check_event_sources(["DeviceMessages", "TwinChangeEvents"]))
        ['DeviceMessages', 'TwinChangeEvents']

    Raises:
        ValueError: ``value`` is not a collection of :data:`ROUTE_SOURCES` names (a lone string is
            refused: it would be read as its letters); the message names ``argument``.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise ValueError(f"{argument} must be a collection of route data sources, such as {ROUTE_SOURCES!r}")
    unknown = [item for item in value if item not in ROUTE_SOURCES]
    if unknown:
        raise ValueError(f"{argument}: {unknown[0]!r} is not a route data source; choose from {ROUTE_SOURCES!r}")
    return frozenset(value)


def section_metadata(patch: Mapping[str, Any], stamp: str, version: int | None) -> dict[str, Any]:
    """The ``$metadata`` of a patch: ``$lastUpdated`` (and ``$lastUpdatedVersion`` when ``version``
    is given, as IoT Hub keeps it for desired properties) on the section and every property in it.

    Example:
        >>> section_metadata({"fw": "1.2"}, "2026-01-01T00:00:00.0000000Z", None)
        {'$lastUpdated': '2026-01-01T00:00:00.0000000Z', 'fw': {'$lastUpdated': '2026-01-01T00:00:00.0000000Z'}}
    """
    metadata: dict[str, Any] = {"$lastUpdated": stamp}
    if version is not None:
        metadata["$lastUpdatedVersion"] = version
    for name, value in patch.items():
        metadata[name] = section_metadata(value if isinstance(value, Mapping) else {}, stamp, version)
    return metadata


def _changed_section(patch: Mapping[str, Any], version: int, stamp: str, *, desired: bool) -> dict[str, Any]:
    changes = {name: value for name, value in patch.items() if name not in ("$version", "$metadata")}
    metadata = section_metadata(changes, stamp, version if desired else None)
    return {**changes, "$metadata": metadata, "$version": version}


def _whole_section(values: Mapping[str, Any], version: int, stamp: str) -> dict[str, Any]:
    return {**values, "$metadata": {"$lastUpdated": NEVER if version == 1 else stamp}, "$version": version}


def twin_document(key: IdentityKey, state: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """A whole twin as a ``replaceTwin`` or lifecycle notification carries it (``state`` as
    :meth:`Twins.state <aioiothub.emulator.hub.twins.Twins.state>` returns it)."""
    document: dict[str, Any] = {"deviceId": key[0]}
    if key[1] is not None:
        document["moduleId"] = key[1]
    document.update(etag=twin_etag(state["version"]), version=state["version"])
    if state["tags"]:
        document["tags"] = state["tags"]
    document["properties"] = {
        "desired": _whole_section(state["desired"], state["desired_version"], stamp),
        "reported": _whole_section(state["reported"], state["reported_version"], stamp),
    }
    return document


class Notifications:
    """Appends IoT Hub's twin-change and lifecycle notifications to the event log (see the module docstring).

    The hub calls the methods of the kinds that are routed only (:attr:`twin_changes`, :attr:`lifecycle`).

    Args:
        events: the built-in endpoint's log.
        hostname: the hub's host name; its first label is ``hubName``.
        sources: the route data sources sent to the built-in endpoint (see :func:`check_event_sources`).
    """

    __slots__ = ("_events", "_hub_name", "lifecycle", "twin_changes")

    def __init__(self, events: EventLog, *, hostname: str, sources: frozenset[str]) -> None:
        self._events = events
        self._hub_name = hostname.split(".")[0]
        self.twin_changes = "TwinChangeEvents" in sources
        """Whether twin changes reach the built-in endpoint."""
        self.lifecycle = "DeviceLifecycleEvents" in sources
        """Whether identities created and deleted reach the built-in endpoint."""

    def twin_updated(
        self,
        key: IdentityKey,
        version: int,
        *,
        tags: Mapping[str, Any] | None = None,
        desired: tuple[Mapping[str, Any], int] | None = None,
        reported: tuple[Mapping[str, Any], int] | None = None,
    ) -> None:
        """A twin was patched: ``updateTwin`` with the twin's new ``version`` and each section's patch.

        Args:
            key: the identity.
            version: the twin's version after the change.
            tags: the tags patch, if the tags were patched.
            desired: ``(patch, new desired $version)``, if the desired properties were patched.
            reported: ``(patch, new reported $version)``, if the device patched its reported properties.
        """
        moment = now_utc()
        stamp = precise_time(moment)
        body: dict[str, Any] = {"version": version}
        if tags is not None:
            body["tags"] = dict(tags)
        properties: dict[str, Any] = {}
        if desired is not None:
            properties["desired"] = _changed_section(desired[0], desired[1], stamp, desired=True)
        if reported is not None:
            properties["reported"] = _changed_section(reported[0], reported[1], stamp, desired=False)
        if properties:
            body["properties"] = properties
        self._append(key, "twinChangeEvents", "twinChangeNotification", "updateTwin", body, moment, stamp)

    def twin_replaced(self, key: IdentityKey, state: Mapping[str, Any]) -> None:
        """A twin's tags and desired properties were replaced: ``replaceTwin`` with the whole twin."""
        moment = now_utc()
        stamp = precise_time(moment)
        body = twin_document(key, state, stamp)
        self._append(key, "twinChangeEvents", "twinChangeNotification", "replaceTwin", body, moment, stamp)

    def identity_created(self, key: IdentityKey, state: Mapping[str, Any]) -> None:
        """An identity was registered: ``createDeviceIdentity`` (or ``createModuleIdentity``) with its twin."""
        self._lifecycle(key, state, "create")

    def identity_deleted(self, key: IdentityKey, state: Mapping[str, Any]) -> None:
        """An identity was deleted: ``deleteDeviceIdentity`` (or ``deleteModuleIdentity``) with its last twin."""
        self._lifecycle(key, state, "delete")

    def _lifecycle(self, key: IdentityKey, state: Mapping[str, Any], verb: str) -> None:
        moment = now_utc()
        stamp = precise_time(moment)
        kind = "Device" if key[1] is None else "Module"
        body = twin_document(key, state, stamp)
        schema = f"{kind.lower()}LifecycleNotification"
        self._append(key, "deviceLifecycleEvents", schema, f"{verb}{kind}Identity", body, moment, stamp)

    def _append(
        self,
        key: IdentityKey,
        source: MessageSource,
        schema: str,
        op_type: str,
        body: dict[str, Any],
        moment: datetime.datetime,
        stamp: str,
    ) -> None:
        device_id, module_id = key
        properties: dict[str, str | None] = {"hubName": self._hub_name, "deviceId": device_id}
        if module_id is not None:
            properties["moduleId"] = module_id
        properties.update(
            {"operationTimestamp": stamp, "iothub-message-schema": schema, "opType": op_type}
        )
        system: dict[str, str | None] = {
            "$.cid": uuid.uuid4().hex[:12],
            "$.uid": self._hub_name,
            "$.ct": "application/json",
            "$.ce": "utf-8",
        }
        record = TelemetryRecord(
            device_id, module_id, json_bytes(body), MappingProxyType(properties), MappingProxyType(system), moment
        )
        self._events.append(record, source)
        self._events.appended()
