"""The checks and parsing steps every topic shares, for the builders and parsers of this package.

Builders check their arguments with the ``_check_*`` functions (a caller's mistake raises
``TypeError`` or ``ValueError`` naming the argument); parsers split and decode what a peer sent with
the others, which raise :class:`~aioiothub.exceptions.ProtocolError` quoting the topic.
"""

from __future__ import annotations

from collections.abc import Mapping

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import validate_identity
from aioiothub.protocol.properties import decode_property_bag, encode_property_bag, quote_component

__all__: list[str] = []

# Long enough for any status or a 64-bit version, short enough that int() never sees a huge string.
_MAX_INTEGER_DIGITS = 20


# --- argument checks (caller mistakes) ---------------------------------------------------------


def check_request_id(request_id: str, argument: str = "request_id") -> str:
    encoded = quote_component(request_id, argument=argument)
    if not encoded:
        raise ValueError(f"{argument}: must not be empty")
    return encoded


def check_status(status: int, argument: str = "status") -> int:
    if not isinstance(status, int) or isinstance(status, bool):
        raise TypeError(f"{argument}: expected int, got {type(status).__name__}")
    if status < 0:
        raise ValueError(f"{argument}: must not be negative, got {status}")
    # int() turns an IntEnum such as http.HTTPStatus into its plain value for formatting.
    return int(status)


def check_segment(value: str, argument: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument}: expected str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{argument}: must not be empty")
    # A topic level cannot hold "/", and MQTT forbids wildcards and NUL in topic names.
    for forbidden in "/+#\x00":
        if forbidden in value:
            raise ValueError(f"{argument}: {value!r} must not contain {forbidden!r}")
    return value


def property_bag(properties: Mapping[str, str | None] | None) -> str:
    return encode_property_bag(properties) if properties else ""


# --- parsing helpers (network data) ------------------------------------------------------------


def mismatch(topic: str, what: str) -> ProtocolError:
    return ProtocolError(f"not a {what} topic: {topic!r}")


def decode_bag(bag: str, topic: str) -> dict[str, str | None]:
    try:
        return decode_property_bag(bag)
    except ProtocolError as exc:
        raise ProtocolError(f"{exc} (topic {topic!r})") from None


def query(rest: str, topic: str, what: str) -> dict[str, str | None]:
    if not rest.startswith("?"):
        raise mismatch(topic, what)
    return decode_bag(rest[1:], topic)


def _parse_integer(text: str | None, name: str, topic: str) -> int:
    # str.isdigit() alone admits superscripts and other scripts' digits, so insist on ASCII.
    if text is None or not (0 < len(text) <= _MAX_INTEGER_DIGITS and text.isascii() and text.isdigit()):
        raise ProtocolError(f"{name} {text!r} is not a decimal integer in topic {topic!r}")
    return int(text)


def optional_integer(parameters: dict[str, str | None], key: str, topic: str) -> int | None:
    if key not in parameters:
        return None
    return _parse_integer(parameters[key], key, topic)


def required_text(parameters: dict[str, str | None], key: str, topic: str) -> str:
    value = parameters.get(key)
    if not value:
        raise ProtocolError(f"missing or empty {key} in topic {topic!r}")
    return value


def _check_identifier(value: str, name: str, topic: str) -> None:
    try:
        validate_identity(value, name)
    except ValueError as exc:
        raise ProtocolError(f"{exc} in topic {topic!r}") from None


def split_identity(topic: str, what: str) -> tuple[str, str | None, str]:
    """Split ``devices/{d}[/modules/{m}]/{rest}`` into device id, module id and rest."""
    if not topic.startswith("devices/"):
        raise mismatch(topic, what)
    device_id, separator, rest = topic[8:].partition("/")
    if not separator:
        raise mismatch(topic, what)
    _check_identifier(device_id, "device id", topic)
    module_id: str | None = None
    if rest.startswith("modules/"):
        module_id, separator, rest = rest[8:].partition("/")
        if not separator:
            raise mismatch(topic, what)
        _check_identifier(module_id, "module id", topic)
    return device_id, module_id, rest


def strip_trailing_slash(bag: str) -> str:
    return bag[:-1] if bag.endswith("/") else bag


def response_topic(
    prefix: str, status: int, request_id: str, *, key: str = "", value: int | None = None, argument: str = ""
) -> str:
    """``{prefix}{status}/?$rid={request_id}``, the shape every response topic has, then ``&{key}={value}``
    when ``value`` is not ``None`` (checked as the caller's ``argument``)."""
    text = f"{prefix}{check_status(status)}/?$rid={check_request_id(request_id)}"
    if value is None:
        return text
    return f"{text}&{key}={check_status(value, argument)}"


def parse_response_topic(topic: str, prefix: str, what: str) -> tuple[int, str, dict[str, str | None]]:
    """The status, ``$rid`` and query parameters of a response topic built by :func:`response_topic`."""
    if not topic.startswith(prefix):
        raise mismatch(topic, what)
    status_text, separator, rest = topic[len(prefix) :].partition("/")
    if not separator:
        raise mismatch(topic, what)
    status = _parse_integer(status_text, "status", topic)
    parameters = query(rest, topic, what)
    return status, required_text(parameters, "$rid", topic), parameters
