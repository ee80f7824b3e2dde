"""The message sent as telemetry and received from the cloud or a module input.

A :class:`Message` is an immutable value: it is validated once when built, so a queued message that is
re-sent after a reconnect is exactly the one that was checked. Use :meth:`Message.replace` to derive a
changed copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.limits import message_wire_size
from aioiothub.protocol.properties import SYSTEM_PROPERTY_KEYS

__all__ = ["Message"]

_MAX_MESSAGE_ID_LENGTH = 128

# Wire key -> attribute of every system property a message can carry.
_WIRE_TO_ATTRIBUTE = {
    "$.mid": "message_id",
    "$.cid": "correlation_id",
    "$.uid": "user_id",
    "$.ct": "content_type",
    "$.ce": "content_encoding",
    "$.exp": "expiry_time",
    "$.ctime": "creation_time",
    "$.sub": "component",
    "$.ifid": "interface_id",
    "$.on": "output_name",
    "$.to": "to",
    "iothub-ack": "ack",
}
_TIME_WIRE_KEYS = frozenset({"$.exp", "$.ctime"})

# Shared by every message without application properties, so building one copies nothing;
# read-only so that no message can change it for the others.
_NO_PROPERTIES: Mapping[str, str] = MappingProxyType({})

_FIELDS = (
    "body",
    "content_type",
    "content_encoding",
    "message_id",
    "correlation_id",
    "user_id",
    "expiry_time",
    "creation_time",
    "component",
    "interface_id",
    "output_name",
    "properties",
    "input_name",
    "ack",
    "to",
)


def _check_ascii_text(value: object, argument: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str or None, not {type(value).__name__}")
    if not value.isascii():
        raise ValueError(f"{argument} must be ASCII, got {value!r}")


def _check_time(value: object, argument: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{argument} must be a datetime or None, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{argument} must be timezone-aware (e.g. datetime.now(UTC)), got {value!r}")


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: str, key: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(f"message property {key} is not an ISO 8601 time: {text!r}") from None
    # The wire format is UTC; a time without an offset is read as UTC rather than local time.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _validated_properties(properties: Mapping[str, str]) -> Mapping[str, str]:
    if not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a mapping or None, not {type(properties).__name__}")
    copied = dict(properties)
    for name, value in copied.items():
        if not isinstance(name, str):
            raise TypeError(f"property names must be str, got {name!r}")
        if not name:
            raise ValueError("property names must not be empty")
        if not name.isascii():
            raise ValueError(f"property name {name!r} must be ASCII")
        if name in SYSTEM_PROPERTY_KEYS:
            raise ValueError(f"property name {name!r} is a system property; use the Message argument for it")
        if not isinstance(value, str):
            raise TypeError(f"property {name!r} must have a str value, not {type(value).__name__}")
        if not value.isascii():
            raise ValueError(f"property {name!r} must have an ASCII value, got {value!r}")
    return MappingProxyType(copied) if copied else _NO_PROPERTIES


class Message:
    """A device-to-cloud, cloud-to-device or module message: a body plus properties.

    Example:
        >>> message = Message("hello", message_id="m1", properties={"alert": "1"})
        >>> message.body
        b'hello'
        >>> message.wire_properties()
        {'$.mid': 'm1', 'alert': '1'}
        >>> Message.json({"temperature": 21.5}).body
        b'{"temperature":21.5}'

    Args:
        body: the payload; a ``str`` is encoded as UTF-8.
        content_type: ``$.ct``, e.g. ``application/json`` (IoT Hub routing on the body needs it).
        content_encoding: ``$.ce``, e.g. ``utf-8``.
        message_id: ``$.mid``, at most 128 characters.
        correlation_id: ``$.cid``.
        user_id: ``$.uid``.
        expiry_time: ``$.exp``, a timezone-aware time; sent in UTC.
        creation_time: ``$.ctime``, a timezone-aware time; sent in UTC.
        component: ``$.sub``, the Plug and Play component the telemetry belongs to.
        interface_id: ``$.ifid``.
        output_name: ``$.on``, the IoT Edge module output.
        properties: application properties; names and values are ASCII strings, and names may not be
            system property keys such as ``$.mid``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a property name or value is not ASCII, a name is empty or reserved, or
            ``message_id`` is too long.

    Messages received from the hub also carry ``input_name`` (module inputs), ``ack`` (``iothub-ack``)
    and ``to`` (``$.to``); messages built locally have ``None`` there.
    """

    __slots__ = (
        "_ack",
        "_body",
        "_component",
        "_content_encoding",
        "_content_type",
        "_correlation_id",
        "_creation_time",
        "_expiry_time",
        "_input_name",
        "_interface_id",
        "_message_id",
        "_output_name",
        "_properties",
        "_to",
        "_user_id",
    )

    def __init__(
        self,
        body: bytes | str = b"",
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        user_id: str | None = None,
        expiry_time: datetime | None = None,
        creation_time: datetime | None = None,
        component: str | None = None,
        interface_id: str | None = None,
        output_name: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(body, bytes):
            self._body = body
        elif isinstance(body, str):
            self._body = body.encode("utf-8")
        elif isinstance(body, bytearray | memoryview):
            self._body = bytes(body)
        else:
            raise TypeError(
                f"body must be bytes or str, not {type(body).__name__} (use Message.json() for JSON values)"
            )
        # Each check runs only for arguments that were given: most messages set one or two.
        if content_type is not None:
            _check_ascii_text(content_type, "content_type")
        if content_encoding is not None:
            _check_ascii_text(content_encoding, "content_encoding")
        if message_id is not None:
            _check_ascii_text(message_id, "message_id")
            if len(message_id) > _MAX_MESSAGE_ID_LENGTH:
                raise ValueError(
                    f"message_id must be at most {_MAX_MESSAGE_ID_LENGTH} characters, got {len(message_id)}"
                )
        if correlation_id is not None:
            _check_ascii_text(correlation_id, "correlation_id")
        if user_id is not None:
            _check_ascii_text(user_id, "user_id")
        if expiry_time is not None:
            _check_time(expiry_time, "expiry_time")
        if creation_time is not None:
            _check_time(creation_time, "creation_time")
        if component is not None:
            _check_ascii_text(component, "component")
        if interface_id is not None:
            _check_ascii_text(interface_id, "interface_id")
        if output_name is not None:
            _check_ascii_text(output_name, "output_name")
        self._content_type = content_type
        self._content_encoding = content_encoding
        self._message_id = message_id
        self._correlation_id = correlation_id
        self._user_id = user_id
        self._expiry_time = expiry_time
        self._creation_time = creation_time
        self._component = component
        self._interface_id = interface_id
        self._output_name = output_name
        self._properties = _NO_PROPERTIES if properties is None else _validated_properties(properties)
        self._input_name: str | None = None
        self._ack: str | None = None
        self._to: str | None = None

    @classmethod
    def json(
        cls,
        value: Any,
        *,
        content_type: str | None = "application/json",
        content_encoding: str | None = "utf-8",
        message_id: str | None = None,
        correlation_id: str | None = None,
        user_id: str | None = None,
        expiry_time: datetime | None = None,
        creation_time: datetime | None = None,
        component: str | None = None,
        interface_id: str | None = None,
        output_name: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> Message:
        """Build a message whose body is ``value`` as compact UTF-8 JSON.

        ``content_type`` and ``content_encoding`` default to ``application/json`` and ``utf-8`` so that
        IoT Hub message routing can query the body.

        Example:
            >>> message = Message.json({"temperature": 21.5}, message_id="m1")
            >>> message.body, message.content_type, message.content_encoding
            (b'{"temperature":21.5}', 'application/json', 'utf-8')

        Args:
            value: any JSON-serialisable value (NaN and infinities are not JSON and are refused).
            content_type: ``$.ct``.
            content_encoding: ``$.ce``.
            message_id: see :class:`Message`.
            correlation_id: see :class:`Message`.
            user_id: see :class:`Message`.
            expiry_time: see :class:`Message`.
            creation_time: see :class:`Message`.
            component: see :class:`Message`.
            interface_id: see :class:`Message`.
            output_name: see :class:`Message`.
            properties: see :class:`Message`.

        Raises:
            TypeError: ``value`` is not JSON-serialisable, or another argument has the wrong type.
            ValueError: ``value`` holds NaN or an infinity, or another argument is invalid.
        """
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except TypeError as exc:
            raise TypeError(f"value is not JSON-serialisable: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"value is not valid JSON: {exc}") from None
        return cls(
            text.encode("utf-8"),
            content_type=content_type,
            content_encoding=content_encoding,
            message_id=message_id,
            correlation_id=correlation_id,
            user_id=user_id,
            expiry_time=expiry_time,
            creation_time=creation_time,
            component=component,
            interface_id=interface_id,
            output_name=output_name,
            properties=properties,
        )

    @classmethod
    def from_wire(
        cls, body: bytes, properties: Mapping[str, str | None], *, input_name: str | None = None
    ) -> Message:
        """Build a message from a received body and decoded property bag.

        System keys become attributes (``$.to`` -> ``to``, ``iothub-ack`` -> ``ack``), every other key an
        application property. Received data is not held to the rules for outgoing messages (it may be
        non-ASCII); a property without a value becomes ``""`` (application) or ``None`` (system).

        Example:
            >>> message = Message.from_wire(b"hi", {"$.mid": "m1", "iothub-ack": "full", "k": "v"})
            >>> message.message_id, message.ack, dict(message.properties)
            ('m1', 'full', {'k': 'v'})

        Args:
            body: the MQTT payload.
            properties: the decoded property bag from the topic.
            input_name: the module input the message arrived on, if any.

        Returns:
            The message.

        Raises:
            ProtocolError: ``$.exp`` or ``$.ctime`` is not an ISO 8601 time.
        """
        message = cls.__new__(cls)
        message._body = bytes(body)
        message._content_type = None
        message._content_encoding = None
        message._message_id = None
        message._correlation_id = None
        message._user_id = None
        message._expiry_time = None
        message._creation_time = None
        message._component = None
        message._interface_id = None
        message._output_name = None
        message._input_name = input_name
        message._ack = None
        message._to = None
        application: dict[str, str] = {}
        for key, value in properties.items():
            attribute = _WIRE_TO_ATTRIBUTE.get(key)
            if attribute is None:
                application[key] = "" if value is None else value
            elif value is None:
                continue
            elif key in _TIME_WIRE_KEYS:
                setattr(message, "_" + attribute, _parse_time(value, key))
            else:
                setattr(message, "_" + attribute, value)
        message._properties = MappingProxyType(application) if application else _NO_PROPERTIES
        return message

    def replace(self, **changes: Any) -> Message:
        """Return a copy with some constructor arguments changed (and validated).

        Example:
            >>> Message(b"x").replace(output_name="out1").output_name
            'out1'

        Args:
            **changes: constructor arguments (``body``, ``message_id``, ``properties``, ...).

        Raises:
            TypeError: an unknown argument was given, or a value has the wrong type.
            ValueError: a value is invalid.
        """
        arguments: dict[str, Any] = {
            "body": self._body,
            "content_type": self._content_type,
            "content_encoding": self._content_encoding,
            "message_id": self._message_id,
            "correlation_id": self._correlation_id,
            "user_id": self._user_id,
            "expiry_time": self._expiry_time,
            "creation_time": self._creation_time,
            "component": self._component,
            "interface_id": self._interface_id,
            "output_name": self._output_name,
            "properties": self._properties,
        }
        unknown = changes.keys() - arguments.keys()
        if unknown:
            raise TypeError(f"replace() got unknown arguments: {', '.join(sorted(unknown))}")
        arguments.update(changes)
        return Message(**arguments)

    @property
    def body(self) -> bytes:
        """The payload."""
        return self._body

    @property
    def content_type(self) -> str | None:
        """``$.ct``."""
        return self._content_type

    @property
    def content_encoding(self) -> str | None:
        """``$.ce``."""
        return self._content_encoding

    @property
    def message_id(self) -> str | None:
        """``$.mid``."""
        return self._message_id

    @property
    def correlation_id(self) -> str | None:
        """``$.cid``."""
        return self._correlation_id

    @property
    def user_id(self) -> str | None:
        """``$.uid``."""
        return self._user_id

    @property
    def expiry_time(self) -> datetime | None:
        """``$.exp``."""
        return self._expiry_time

    @property
    def creation_time(self) -> datetime | None:
        """``$.ctime``."""
        return self._creation_time

    @property
    def component(self) -> str | None:
        """``$.sub``."""
        return self._component

    @property
    def interface_id(self) -> str | None:
        """``$.ifid``."""
        return self._interface_id

    @property
    def output_name(self) -> str | None:
        """``$.on``."""
        return self._output_name

    @property
    def properties(self) -> Mapping[str, str]:
        """Application properties (read-only)."""
        return self._properties

    @property
    def input_name(self) -> str | None:
        """The module input a received message arrived on."""
        return self._input_name

    @property
    def ack(self) -> str | None:
        """``iothub-ack`` of a received C2D message: ``none``, ``positive``, ``negative`` or ``full``."""
        return self._ack

    @property
    def to(self) -> str | None:
        """``$.to`` of a received cloud-to-device message."""
        return self._to

    def json_body(self) -> Any:
        """Decode the body as JSON.

        Example:
            >>> Message(b'{"a":1}').json_body()
            {'a': 1}

        Raises:
            ValueError: the body is not valid JSON.
        """
        return json.loads(self._body)

    def wire_properties(self) -> dict[str, str]:
        """Return the property bag to send: system properties under their wire keys, then application ones.

        Example:
            >>> Message(b"", content_type="application/json", properties={"k": "v"}).wire_properties()
            {'$.ct': 'application/json', 'k': 'v'}
        """
        wire: dict[str, str] = {}
        if self._message_id is not None:
            wire["$.mid"] = self._message_id
        if self._correlation_id is not None:
            wire["$.cid"] = self._correlation_id
        if self._user_id is not None:
            wire["$.uid"] = self._user_id
        if self._content_type is not None:
            wire["$.ct"] = self._content_type
        if self._content_encoding is not None:
            wire["$.ce"] = self._content_encoding
        if self._expiry_time is not None:
            wire["$.exp"] = _format_time(self._expiry_time)
        if self._creation_time is not None:
            wire["$.ctime"] = _format_time(self._creation_time)
        if self._component is not None:
            wire["$.sub"] = self._component
        if self._interface_id is not None:
            wire["$.ifid"] = self._interface_id
        if self._output_name is not None:
            wire["$.on"] = self._output_name
        if self._to is not None:
            wire["$.to"] = self._to
        if self._ack is not None:
            wire["iothub-ack"] = self._ack
        wire.update(self._properties)
        return wire

    def wire_size(self) -> int:
        """Size counted against IoT Hub's message limit: body + system values + application names and values.

        Example:
            >>> Message(b"abc", message_id="m1", properties={"k": "vv"}).wire_size()
            8
        """
        return message_wire_size(self._body, self.wire_properties())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, "_" + name) == getattr(other, "_" + name) for name in _FIELDS)

    def __repr__(self) -> str:
        parts = [f"body=<{len(self._body)} bytes>"]
        for name in _FIELDS[1:]:
            value = getattr(self, "_" + name)
            if name == "properties":
                if value:
                    parts.append(f"properties={dict(value)!r}")
            elif value is not None:
                parts.append(f"{name}={value!r}")
        return f"Message({', '.join(parts)})"
