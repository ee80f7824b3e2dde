"""The message sent as telemetry and received from the cloud or a module input.

A :class:`Message` is an immutable value: it is validated once when built, so a queued message that is
re-sent after a reconnect is exactly the one that was checked. Use :meth:`Message.replace` to derive a
changed copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, FrozenInstanceError, dataclass, field, fields, replace
from datetime import UTC, datetime
from itertools import repeat
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.limits import message_wire_size
from aioiothub.protocol.properties import (
    SYSTEM_PROPERTY_KEYS,
    SYSTEM_PROPERTY_ORDER,
    validate_application_properties,
)

__all__ = ["Acknowledger", "Message"]

_MAX_MESSAGE_ID_LENGTH = 128

# Shared by every message without application properties, so building one copies nothing;
# read-only so that no message can change it for the others.
_NO_PROPERTIES: Mapping[str, str] = MappingProxyType({})
# Its default factory, called for every message built without properties: a C-level callable that
# returns that one mapping, cheaper than a lambda.
_no_properties = repeat(_NO_PROPERTIES).__next__


class Acknowledger(Protocol):
    """What completes a received message with the hub: its PUBACK, on the connection it came on."""

    def acknowledge(self) -> bool:
        """Send the PUBACK once; ``True`` when it went out, ``False`` when that connection is gone."""
        ...


def _check_ascii_text(value: object, argument: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str or None, not {type(value).__name__}")
    if not value.isascii():
        raise ValueError(f"{argument} must be ASCII, got {value!r}")
    return value


def _check_message_id(value: object, argument: str) -> None:
    length = len(_check_ascii_text(value, argument))
    if length > _MAX_MESSAGE_ID_LENGTH:
        raise ValueError(f"{argument} must be at most {_MAX_MESSAGE_ID_LENGTH} characters, got {length}")


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


@dataclass(frozen=True, slots=True)
class _SystemProperty:
    """How one system-property field of :class:`Message` travels: its wire key and how it is checked."""

    key: str
    check: Callable[[object, str], object] | None
    """Run on a constructor argument that is not ``None`` (raising if it is invalid); ``None`` for
    received-only fields."""
    to_wire: Callable[[Any], str] | None
    """The value's wire text, where it is not already a ``str``."""
    from_wire: Callable[[str, str], Any] | None
    """The value from its wire text and key, where it is not kept as a ``str``."""


_SYSTEM = "aioiothub.system_property"


def _system(key: str, check: Callable[[object, str], object] | None = _check_ascii_text, *, time: bool = False) -> Any:
    # A time travels as ISO 8601 text in UTC; every other system value is text already.
    system = (
        _SystemProperty(key, _check_time, _format_time, _parse_time)
        if time
        else _SystemProperty(key, check, None, None)
    )
    # A field is a constructor argument exactly when it has a check: received-only ones are not.
    return field(default=None, init=system.check is not None, metadata={_SYSTEM: system})


@dataclass(frozen=True, slots=True, repr=False)
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
        properties: application properties (``None`` for none); names and values are ASCII strings,
            and names may not be system property keys such as ``$.mid``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a property name or value is not ASCII, a name is empty or reserved, or
            ``message_id`` is too long.

    Messages received from the hub also carry ``input_name`` (module inputs), ``ack`` (``iothub-ack``)
    and ``to`` (``$.to``); messages built locally have ``None`` there. A received message is completed
    with the hub by :meth:`acknowledge` (see there; ``ack`` is the sender's feedback request, which
    is why the method has the longer name).
    """

    body: bytes = b""
    _: KW_ONLY
    content_type: str | None = _system("$.ct")
    content_encoding: str | None = _system("$.ce")
    message_id: str | None = _system("$.mid", _check_message_id)
    correlation_id: str | None = _system("$.cid")
    user_id: str | None = _system("$.uid")
    expiry_time: datetime | None = _system("$.exp", time=True)
    creation_time: datetime | None = _system("$.ctime", time=True)
    component: str | None = _system("$.sub")
    interface_id: str | None = _system("$.ifid")
    output_name: str | None = _system("$.on")
    properties: Mapping[str, str] = field(default_factory=_no_properties)
    input_name: str | None = field(default=None, init=False)
    """The module input a received message arrived on."""
    ack: str | None = _system("iothub-ack", None)
    """``iothub-ack`` of a received C2D message: ``none``, ``positive``, ``negative`` or ``full``."""
    to: str | None = _system("$.to", None)
    """``$.to`` of a received cloud-to-device message."""
    _acknowledger: Acknowledger | None = field(default=None, init=False, repr=False, compare=False)

    if TYPE_CHECKING:
        # The generated __init__ takes a str body too (encoded as UTF-8); this tells type checkers.
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
        ) -> None: ...

    def __post_init__(self) -> None:
        body: object = self.body
        if type(body) is not bytes:
            if isinstance(body, str):
                object.__setattr__(self, "body", body.encode("utf-8"))
            elif isinstance(body, bytes | bytearray | memoryview):
                object.__setattr__(self, "body", bytes(body))
            else:
                raise TypeError(
                    f"body must be bytes or str, not {type(body).__name__} (use Message.json() for JSON values)"
                )
        # Each system field that was given is checked (compiled from the field table below the class).
        _check_system_arguments(self)
        properties: object = self.properties
        if properties is not _NO_PROPERTIES:
            copied = {} if properties is None else validate_application_properties(properties)  # type: ignore[arg-type]
            object.__setattr__(self, "properties", MappingProxyType(copied) if copied else _NO_PROPERTIES)

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
        return cls(
            encode_json(value),
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
        cls,
        body: bytes,
        properties: Mapping[str, str | None],
        *,
        input_name: str | None = None,
        acknowledger: Acknowledger | None = None,
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
            acknowledger: what :meth:`acknowledge` calls (the client's record of the delivery).

        Returns:
            The message.

        Raises:
            ProtocolError: ``$.exp`` or ``$.ctime`` is not an ISO 8601 time.
        """
        values: dict[str, Any] = dict.fromkeys(_FIELD_NAMES)
        values["body"] = bytes(body)
        values["input_name"] = input_name
        application: dict[str, str] = {}
        for key, value in properties.items():
            system = _DECODERS.get(key)
            if system is None:
                application[key] = "" if value is None else value
            elif value is not None:
                name, parse = system
                values[name] = value if parse is None else parse(value, key)
        values["properties"] = MappingProxyType(application) if application else _NO_PROPERTIES
        values["_acknowledger"] = acknowledger
        # Received messages skip the checks for outgoing ones: fill the fields directly.
        message = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(message, name, value)
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
        unknown = changes.keys() - _INIT_FIELD_NAMES
        if unknown:
            raise TypeError(f"replace() got unknown arguments: {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    async def acknowledge(self) -> bool:
        """Complete this received message with the hub, so that it is not delivered again.

        With ``cloud_messages(ack="manual")`` (or ``input_messages(..., ack="manual")``) call it once
        the message has been processed: until then the hub keeps the message, and delivers it again
        on the next connection if this one ends first -- so a crash while processing loses nothing,
        and a message may arrive more than once (at-least-once). In the default mode messages are
        acknowledged as the loop takes them, and this returns what that acknowledgement did.

        The method is not called ``ack`` because :attr:`ack` already holds the sender's
        ``iothub-ack`` feedback request. Calling it again does nothing more. MQTT 3.1.1 asks for
        acknowledgements in the order messages arrived; IoT Hub completes each message by its own
        PUBACK, but how it treats ones out of order is not documented, so where order is easy to
        keep (one loop processing in turn), keep it.

        Example:
            >>> async def receive(client):
            ...     async for message in client.cloud_messages(ack="manual"):
            ...         await store(message.body)
            ...         await message.acknowledge()

        Returns:
            ``True`` when the acknowledgement went to the hub; ``False`` when the connection the
            message came on is gone: the hub then delivers it again on the next connection.

        Raises:
            RuntimeError: the message was not received from the hub (or is a :meth:`replace` copy).
        """
        acknowledger = self._acknowledger
        if acknowledger is None:
            raise RuntimeError("only a message received from the hub can be acknowledged")
        return acknowledger.acknowledge()

    def json_body(self) -> Any:
        """Decode the body as JSON.

        Example:
            >>> Message(b'{"a":1}').json_body()
            {'a': 1}

        Raises:
            ValueError: the body is not valid JSON.
        """
        return json.loads(self.body)

    def wire_properties(self) -> dict[str, str]:
        """Return the property bag to send: system properties under their wire keys, then application ones.

        Example:
            >>> Message(b"", content_type="application/json", properties={"k": "v"}).wire_properties()
            {'$.ct': 'application/json', 'k': 'v'}
        """
        # The body is compiled from the field table at import (see _compile_system_fields) and
        # takes this declaration's place.
        raise NotImplementedError

    def wire_size(self) -> int:
        """Size counted against IoT Hub's message limit: body + system values + application names and values.

        Example:
            >>> Message(b"abc", message_id="m1", properties={"k": "vv"}).wire_size()
            8
        """
        return message_wire_size(self.body, self.wire_properties())

    def __repr__(self) -> str:
        parts = [f"body=<{len(self.body)} bytes>"]
        for name in _REPR_FIELD_NAMES:
            value = getattr(self, name)
            if name == "properties":
                if value:
                    parts.append(f"properties={dict(value)!r}")
            elif value is not None:
                parts.append(f"{name}={value!r}")
        return f"Message({', '.join(parts)})"


def _refuse_assignment(self: Message, name: str, value: object = None) -> None:
    raise FrozenInstanceError(f"Message is immutable: cannot assign or delete {name!r} (use replace())")


# A frozen dataclass with slots raises TypeError, not AttributeError, for an attribute it does not
# have on CPython 3.11 (its generated __setattr__ calls super() on the class before slots were
# added); every assignment refuses the same way here.
type.__setattr__(Message, "__setattr__", _refuse_assignment)
type.__setattr__(Message, "__delattr__", _refuse_assignment)

# Per-class tables, built once from the field list so that no call reflects on the dataclass.
_FIELD_NAMES = tuple(item.name for item in fields(Message))
_INIT_FIELD_NAMES = frozenset(item.name for item in fields(Message) if item.init)
_REPR_FIELD_NAMES = tuple(item.name for item in fields(Message) if item.repr and item.name != "body")
_SYSTEM_FIELDS: dict[str, tuple[str, _SystemProperty]] = {
    item.metadata[_SYSTEM].key: (item.name, item.metadata[_SYSTEM])
    for item in fields(Message)
    if _SYSTEM in item.metadata
}
# The protocol lists the system keys once; a field for a key it does not know, or a key without a
# field, would send or receive a property that the other side files differently.
if _SYSTEM_FIELDS.keys() != SYSTEM_PROPERTY_KEYS:
    raise RuntimeError(f"Message system fields do not match the protocol's keys: {sorted(_SYSTEM_FIELDS)}")
_DECODERS = {key: (name, system.from_wire) for key, (name, system) in _SYSTEM_FIELDS.items()}


def _compile(name: str, lines: list[str], namespace: dict[str, Any]) -> Callable[[Message], Any]:
    # The field table is turned into straight-line code once, here: it runs as fast as checks and
    # encoding written out field by field, where a loop over the table at every call is several
    # times slower (these run for every message sent).
    source = f"def {name}(self):\n" + "".join(f"    {line}\n" for line in lines)
    exec(source, namespace)
    function: Callable[[Message], Any] = namespace[name]
    return function


def _compile_system_fields() -> tuple[Callable[[Message], None], Callable[[Message], dict[str, str]]]:
    """The constructor's checks of the system fields, and :meth:`Message.wire_properties`."""
    namespace: dict[str, Any] = {}
    checks: list[str] = []
    for name, system in _SYSTEM_FIELDS.values():
        if system.check is not None:
            namespace[f"check_{name}"] = system.check
            checks += [f"if self.{name} is not None:", f"    check_{name}(self.{name}, {name!r})"]
    # Sent in the protocol's order rather than the fields' (which is the constructor's and the repr's).
    encodes = ["wire = {}"]
    for key in SYSTEM_PROPERTY_ORDER:
        name, system = _SYSTEM_FIELDS[key]
        # Most fields are None: reading a set one twice is cheaper than keeping every one in a local.
        text = f"self.{name}"
        if system.to_wire is not None:
            namespace[f"encode_{name}"] = system.to_wire
            text = f"encode_{name}({text})"
        encodes += [f"if self.{name} is not None:", f"    wire[{key!r}] = {text}"]
    encodes += ["wire.update(self.properties)", "return wire"]
    return _compile("check", checks, namespace), _compile("wire_properties", encodes, namespace)


_check_system_arguments, _wire_properties = _compile_system_fields()
_wire_properties.__doc__ = Message.wire_properties.__doc__
_wire_properties.__qualname__ = Message.wire_properties.__qualname__
_wire_properties.__module__ = __name__
type.__setattr__(Message, "wire_properties", _wire_properties)


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, the way :meth:`Message.json` encodes bodies.

    Raises:
        TypeError: ``value`` is not JSON-serialisable.
        ValueError: ``value`` holds NaN or an infinity.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"value is not JSON-serialisable: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"value is not valid JSON: {exc}") from None
    return text.encode("utf-8")
