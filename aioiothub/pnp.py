"""IoT Plug and Play (and IoT Central) conventions: components, writable-property acknowledgements.

A Plug and Play device announces its DTDL model id when it connects (the clients' ``model_id=``
option) and then follows a few conventions on top of ordinary telemetry, twin and methods. This
module builds and reads the JSON those conventions prescribe; it does no I/O of its own.

* **Component telemetry** carries the component's name in ``$.sub``: :func:`telemetry_message`.
* **Component properties** are nested under the component's name with the marker ``"__t": "c"``:
  :func:`reported_properties`.
* **Writable properties** are set by the solution in the desired properties and acknowledged by
  the device in the reported properties with ``{"value", "ac", "av", "ad"}``:
  :class:`WritablePropertyResponse`. ``client.writable_property_requests()`` splits each desired
  patch into one :class:`WritablePropertyRequest` per component and property, with the desired
  ``$version`` attached, and each is answered with one call: ``await request.respond(200)``.
* **Component commands** are direct methods named ``"{component}*{command}"``; every
  :class:`~aioiothub.MethodRequest` already has them split into ``component`` and ``command``.

Example:
    >>> from aioiothub import pnp
    >>> pnp.reported_properties({"maxTempSinceLastReboot": 38.2}, component="thermostat1")
    {'thermostat1': {'__t': 'c', 'maxTempSinceLastReboot': 38.2}}
    >>> pnp.reported_properties({"targetTemperature": pnp.WritablePropertyResponse(21.5, ac=200, av=4)})
    {'targetTemperature': {'value': 21.5, 'ac': 200, 'av': 4}}
    >>> [(r.component, r.name, r.value, r.version) for r in pnp.split_desired_patch(
    ...     {"thermostat1": {"__t": "c", "targetTemperature": 23}, "$version": 3})]
    [('thermostat1', 'targetTemperature', 23, 3)]
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aioiothub._session.twin import Twin
from aioiothub.message import Message

__all__ = [
    "COMPONENT_MARKER",
    "DesiredPropertySource",
    "WritablePropertyRequest",
    "WritablePropertyResponse",
    "pending_writable_properties",
    "reported_properties",
    "split_desired_patch",
    "telemetry_message",
    "writable_property_requests",
]

COMPONENT_MARKER = {"__t": "c"}
"""What marks an object in the twin as a component rather than a property of object type."""

# DTDL names: a letter, then letters, digits and underscores, not ending with an underscore.
_DTDL_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9_]{0,62}[A-Za-z0-9])?")

ReportedPatchSender = Callable[[dict[str, Any]], Awaitable[int]]
"""Sends a reported-properties patch and returns the new reported ``$version``."""


def _check_component(component: object, argument: str = "component") -> str:
    if not isinstance(component, str):
        raise TypeError(f"{argument} must be a str, not {type(component).__name__}")
    if not _DTDL_NAME.fullmatch(component):
        raise ValueError(
            f"{argument} must be a DTDL name (a letter, then up to 63 letters, digits or underscores, "
            f"not ending with '_'), not {component!r}"
        )
    return component


@dataclass(frozen=True, slots=True)
class WritablePropertyResponse:
    """A device's acknowledgement of a writable property, as it goes into the reported properties.

    Args:
        value: the value the device now uses (usually the desired value it accepted).
        ac: the acknowledgement code, an HTTP status: 200 accepted, 202 in progress, 203 the
            device's own default (with ``av=0``), 400 rejected, 500 failed.
        av: the desired ``$version`` being acknowledged (0 for a device default).
        ad: an optional description for the solution's user.

    Example:
        >>> WritablePropertyResponse(21.5, ac=200, av=4, ad="applied").as_dict()
        {'value': 21.5, 'ac': 200, 'av': 4, 'ad': 'applied'}
        >>> WritablePropertyResponse.device_default(20.0).as_dict()
        {'value': 20.0, 'ac': 203, 'av': 0}
    """

    value: Any
    ac: int
    av: int
    ad: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ac, bool) or not isinstance(self.ac, int) or not 100 <= self.ac <= 599:
            raise ValueError(f"ac must be an HTTP status code (an int from 100 to 599), not {self.ac!r}")
        if isinstance(self.av, bool) or not isinstance(self.av, int) or self.av < 0:
            raise ValueError(f"av must be a desired $version (an int, 0 or more), not {self.av!r}")
        if self.ad is not None and not isinstance(self.ad, str):
            raise TypeError(f"ad must be a str or None, not {type(self.ad).__name__}")

    @classmethod
    def device_default(cls, value: Any, description: str | None = None) -> WritablePropertyResponse:
        """The device reporting its own default before the solution set a value (``ac`` 203, ``av`` 0)."""
        return cls(value, ac=203, av=0, ad=description)

    def as_dict(self) -> dict[str, Any]:
        """``{"value", "ac", "av"[, "ad"]}`` as the conventions spell it."""
        acknowledgement = {"value": self.value, "ac": self.ac, "av": self.av}
        if self.ad is not None:
            acknowledgement["ad"] = self.ad
        return acknowledgement


def reported_properties(properties: Mapping[str, Any], *, component: str | None = None) -> dict[str, Any]:
    """A reported-properties patch, nested under ``component`` with ``"__t": "c"`` when given.

    :class:`WritablePropertyResponse` values become their ``{"value", "ac", "av", "ad"}`` form.
    Send the result with ``client.update_reported_properties(...)``.

    Example:
        >>> reported_properties({"serialNumber": "SN-1"})
        {'serialNumber': 'SN-1'}
        >>> reported_properties({"maxTemp": 30.5}, component="thermostat1")
        {'thermostat1': {'__t': 'c', 'maxTemp': 30.5}}

    Raises:
        TypeError: ``properties`` is not a mapping.
        ValueError: ``component`` is not a DTDL name.
    """
    if not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a mapping, not {type(properties).__name__}")
    values = {
        name: value.as_dict() if isinstance(value, WritablePropertyResponse) else value
        for name, value in properties.items()
    }
    if component is None:
        return values
    return {_check_component(component): {**COMPONENT_MARKER, **values}}


def telemetry_message(values: Any, *, component: str | None = None, **options: Any) -> Message:
    """A JSON telemetry message, sent for ``component`` (``$.sub``) when given.

    Example:
        >>> message = telemetry_message({"temperature": 21.5}, component="thermostat1")
        >>> message.body, message.component, message.content_type
        (b'{"temperature":21.5}', 'thermostat1', 'application/json')

    Args:
        values: the telemetry, any JSON-serialisable value (usually ``{name: value}``).
        component: the component the telemetry belongs to; ``None`` for the default component.
        **options: other :meth:`Message.json <aioiothub.Message.json>` arguments (``message_id``,
            ``properties`` …).

    Raises:
        TypeError, ValueError: as :meth:`Message.json <aioiothub.Message.json>`; ``component`` is
            not a DTDL name.
    """
    if component is not None:
        _check_component(component)
    return Message.json(values, component=component, **options)


class WritablePropertyRequest:
    """One writable property the solution set: answer it with :meth:`respond`.

    Attributes:
        component: the component, or ``None`` for a property of the default component.
        name: the property name.
        value: the desired value (``None`` when the solution removed it).
        version: the desired ``$version`` the request came with (what ``av`` acknowledges).
        responded: whether :meth:`respond` was called.
    """

    __slots__ = ("_send", "component", "name", "responded", "value", "version")

    def __init__(
        self, *, component: str | None, name: str, value: Any, version: int, send: ReportedPatchSender
    ) -> None:
        self.component = component
        self.name = name
        self.value = value
        self.version = version
        self.responded = False
        self._send = send

    def __repr__(self) -> str:
        return (
            f"WritablePropertyRequest(component={self.component!r}, name={self.name!r}, "
            f"value={self.value!r}, version={self.version!r})"
        )

    def response(self, status: int = 200, description: str | None = None, **changes: Any) -> dict[str, Any]:
        """The reported-properties patch that acknowledges this request (nothing is sent).

        Args:
            status: the ``ac`` code (200 accepted, 202 in progress, 400 rejected, 500 failed).
            description: the ``ad`` text, if any.
            **changes: ``value=`` to report a value other than the desired one (the value the
                device keeps after rejecting a request, for instance).
        """
        unknown = changes.keys() - {"value"}
        if unknown:
            raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
        value = changes.get("value", self.value)
        acknowledgement = WritablePropertyResponse(value, ac=status, av=self.version, ad=description)
        return _nest({self.name: acknowledgement.as_dict()}, self.component)

    async def respond(self, status: int = 200, description: str | None = None, **changes: Any) -> int:
        """Acknowledge the request in the reported properties; returns the new reported ``$version``.

        Example:
            >>> async def apply(client):
            ...     async for request in client.writable_property_requests():
            ...         if request.name == "targetTemperature" and 5 <= request.value <= 35:
            ...             await request.respond(200, "applied")
            ...         else:
            ...             await request.respond(400, "out of range", value=None)

        Args:
            status: the ``ac`` code.
            description: the ``ad`` text, if any.
            **changes: ``value=`` to report a value other than the desired one.

        Raises:
            ValueError: ``status`` is not an HTTP status code.
            ServiceError, TimeoutError: as ``update_reported_properties``.
        """
        patch = self.response(status, description, **changes)
        self.responded = True
        return await self._send(patch)


def _nest(properties: dict[str, Any], component: str | None) -> dict[str, Any]:
    return properties if component is None else {component: {**COMPONENT_MARKER, **properties}}


def _is_component(name: str, value: Any, components: Collection[str] | None) -> bool:
    if not isinstance(value, dict):
        return False
    return value.get("__t") == "c" or (components is not None and name in components)


def _requests(
    desired: Mapping[str, Any],
    version: int,
    components: Collection[str] | None,
    send: ReportedPatchSender,
) -> Iterator[WritablePropertyRequest]:
    for name, value in desired.items():
        if name.startswith("$"):
            continue  # $version, $metadata
        if _is_component(name, value, components):
            for property_name, property_value in value.items():
                if property_name != "__t" and not property_name.startswith("$"):
                    yield WritablePropertyRequest(
                        component=name, name=property_name, value=property_value, version=version, send=send
                    )
        elif components is not None and name in components:
            continue  # a component removed as a whole: nothing to acknowledge
        else:
            yield WritablePropertyRequest(component=None, name=name, value=value, version=version, send=send)


def _version(desired: Mapping[str, Any]) -> int | None:
    version = desired.get("$version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


async def _send_nothing(patch: dict[str, Any]) -> int:
    raise RuntimeError("this request was not made by a client: send request.response() yourself")


def split_desired_patch(
    patch: Mapping[str, Any],
    *,
    components: Collection[str] | None = None,
    send: ReportedPatchSender | None = None,
) -> list[WritablePropertyRequest]:
    """Split a desired-properties patch into one request per component property and root property.

    A top-level object is a component when it carries ``"__t": "c"`` (as the hub and IoT Central
    write them) or its name is in ``components``; any other top-level key is a property of the
    default component, even when its value is an object.

    Example:
        >>> patch = {"thermostat1": {"__t": "c", "targetTemperature": 23}, "fanSpeed": 2, "$version": 7}
        >>> [(r.component, r.name, r.value, r.version) for r in split_desired_patch(patch)]
        [('thermostat1', 'targetTemperature', 23, 7), (None, 'fanSpeed', 2, 7)]

    Args:
        patch: a desired patch including ``"$version"``.
        components: the component names of the device's model, for patches without the marker.
        send: what :meth:`WritablePropertyRequest.respond` sends patches with.
    """
    return list(_requests(patch, _version(patch) or 0, components, send or _send_nothing))


def pending_writable_properties(
    twin: Twin,
    *,
    components: Collection[str] | None = None,
    send: ReportedPatchSender | None = None,
) -> list[WritablePropertyRequest]:
    """The writable properties in ``twin`` that the device has not acknowledged with their value.

    A device that was offline (or restarted) when the solution wrote a property finds it here: a
    desired property is pending unless the reported properties hold an acknowledgement of it
    whose ``value`` equals the desired value. Each request carries the twin's desired ``$version``.

    Example:
        >>> twin = Twin(desired={"fanSpeed": 2, "mode": "eco", "$version": 5},
        ...             reported={"fanSpeed": {"value": 2, "ac": 200, "av": 3}, "$version": 9})
        >>> [(r.name, r.value, r.version) for r in pending_writable_properties(twin)]
        [('mode', 'eco', 5)]
    """
    pending = []
    for request in _requests(twin.desired, _version(twin.desired) or 0, components, send or _send_nothing):
        section = twin.reported if request.component is None else twin.reported.get(request.component)
        acknowledgement = section.get(request.name) if isinstance(section, dict) else None
        if not (isinstance(acknowledgement, dict) and "value" in acknowledgement
                and acknowledgement["value"] == request.value):
            pending.append(request)
    return pending


class DesiredPropertySource(Protocol):
    """What :func:`writable_property_requests` reads the desired properties from (a client's session)."""

    async def start_desired(self) -> Twin | None:
        """Subscribe to desired patches; the twin when this call read it after subscribing."""
        ...

    async def get_twin(self) -> Twin:
        """Read the twin."""
        ...

    def desired_patches(self) -> AsyncIterator[dict[str, Any]]:
        """Desired patches as they arrive (with a synthetic one after a reconnect)."""
        ...


async def writable_property_requests(
    source: DesiredPropertySource,
    send: ReportedPatchSender,
    *,
    components: Collection[str] | None = None,
    pending: bool = True,
) -> AsyncIterator[WritablePropertyRequest]:
    """Yield writable-property requests: first those pending in the twin, then each patch's.

    The subscription comes first and the twin is read after it, so that no write falls between
    the two; a patch the twin reading already covered (``$version`` not above it) is skipped.
    This is what ``client.writable_property_requests()`` returns.
    """
    twin = await source.start_desired()
    covered: int | None = None
    if pending:
        twin = twin or await source.get_twin()
        covered = _version(twin.desired)
        for request in pending_writable_properties(twin, components=components, send=send):
            yield request
    async for patch in source.desired_patches():
        version = _version(patch)
        if version is not None and covered is not None and version <= covered:
            continue
        for request in _requests(patch, version or 0, components, send):
            yield request
