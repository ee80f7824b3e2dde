"""Percent-encoding and property bags as IoT Hub puts them in topic names.

A property bag is the tail of a telemetry, cloud-to-device or module-input topic: ``k1=v1&k2=v2&k3``.
Each name and value is percent-encoded like a URL query component, with two IoT Hub specifics: ``+``
is a literal plus (never a space), and a name without ``=`` carries the value ``None`` while ``k=``
carries the empty string. Encoding keeps only the RFC 3986 unreserved characters literal, so the
output never contains ``/``, ``&``, ``=``, ``+``, ``#`` or ``%`` other than as escapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from aioiothub.exceptions import ProtocolError

__all__ = [
    "SYSTEM_PROPERTY_KEYS",
    "SYSTEM_PROPERTY_ORDER",
    "decode_property_bag",
    "encode_property_bag",
    "quote_component",
    "unquote_component",
    "validate_application_properties",
]

SYSTEM_PROPERTY_ORDER: tuple[str, ...] = (
    "$.mid",
    "$.cid",
    "$.uid",
    "$.ct",
    "$.ce",
    "$.exp",
    "$.ctime",
    "$.sub",
    "$.ifid",
    "$.on",
    "$.to",
    "iothub-ack",
)
"""The system property keys in the order a message's property bag carries them."""

SYSTEM_PROPERTY_KEYS: frozenset[str] = frozenset(SYSTEM_PROPERTY_ORDER)
"""Decoded names of the system properties IoT Hub recognises in a property bag."""

_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"

# The encoded form of every byte value, so escaping is one table lookup per UTF-8 byte.
_BYTE_ESCAPES = [chr(byte) if chr(byte) in _UNRESERVED else f"%{byte:02X}" for byte in range(256)]

# Every two-character hex spelling, in any mix of cases, mapped to its byte value. A dict lookup
# both validates and converts, and unlike int(x, 16) it rejects "+1", " 1" and "1_".
_HEX_PAIRS: dict[str, int] = {
    f"{high}{low}": int(f"{high}{low}", 16) for high in "0123456789abcdefABCDEF" for low in "0123456789abcdefABCDEF"
}

# Names and short values such as "$.ct" or "application/json" repeat on every message, so their
# escaped and unescaped forms are memoised; longer texts are not, which keeps the memo small.
_MEMO_MAX_LENGTH = 64


@lru_cache(maxsize=1024)
def _escape_short(text: str) -> str:
    return "".join(map(_BYTE_ESCAPES.__getitem__, text.encode()))


def _quote(text: str) -> str:
    # Most names and values are plain identifiers: rstrip with the unreserved set empties them
    # entirely, and this C-level scan is far cheaper than building the escaped string.
    if not text.rstrip(_UNRESERVED):
        return text
    if len(text) <= _MEMO_MAX_LENGTH:
        return _escape_short(text)
    return "".join(map(_BYTE_ESCAPES.__getitem__, text.encode()))


def quote_component(text: str, *, argument: str = "text") -> str:
    """Percent-encode one name or value for a property bag or query string.

    The RFC 3986 unreserved characters ``A-Z a-z 0-9 - _ . ~`` stay literal; every other character
    becomes ``%XX`` escapes of its UTF-8 bytes, with upper-case hex.

    Args:
        text: the text to encode.
        argument: the name reported in error messages.

    Returns:
        The encoded text (``text`` itself when nothing needs escaping).

    Raises:
        TypeError: ``text`` is not a ``str``.
        ValueError: ``text`` cannot be encoded as UTF-8 (it holds a lone surrogate).
    """
    if not isinstance(text, str):
        raise TypeError(f"{argument}: expected str, got {type(text).__name__}")
    try:
        return _quote(text)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{argument}: {text!r} is not encodable as UTF-8") from exc


def unquote_component(text: str) -> str:
    """Decode one percent-encoded name or value received from the network.

    ``%xx`` escapes are decoded case-insensitively and the resulting bytes must be UTF-8. ``+`` stays
    a ``+``. Characters outside the unreserved set that arrive unescaped are kept as they are.

    Args:
        text: the encoded text.

    Returns:
        The decoded text.

    Raises:
        ProtocolError: a ``%`` is not followed by two hex digits, or the escapes do not decode as UTF-8.
    """
    if "%" not in text:
        return text
    if len(text) <= _MEMO_MAX_LENGTH:
        return _unescape_short(text)
    return _unescape(text)


def _unescape(text: str) -> str:
    head, *escaped = text.split("%")
    try:
        decoded = bytearray(head.encode())
        for piece in escaped:
            value = _HEX_PAIRS.get(piece[:2])
            if value is None:
                raise ProtocolError(f"malformed percent-escape in {text!r}")
            decoded.append(value)
            decoded += piece[2:].encode()
        return decoded.decode()
    except UnicodeError as exc:
        raise ProtocolError(f"percent-escapes in {text!r} are not valid UTF-8") from exc


# Failures raise, and lru_cache does not memoise exceptions, so bad input is never cached.
_unescape_short = lru_cache(maxsize=1024)(_unescape)


def encode_property_bag(properties: Mapping[str, str | None]) -> str:
    """Encode properties as a bag: ``k1=v1&k2=v2``, in the mapping's order.

    A ``None`` value is written as the bare name (no ``=``); an empty string as ``name=``.

    Args:
        properties: property names (non-empty) mapped to values or ``None``.

    Returns:
        The bag text; ``""`` for an empty mapping.

    Raises:
        TypeError: a name or value is not a ``str`` (or a value not ``None``).
        ValueError: a name is empty, or a name or value is not encodable as UTF-8.
    """
    parts: list[str] = []
    append = parts.append
    # The unreserved fast path is inlined: this runs for every property of every message sent.
    try:
        for key, value in properties.items():
            if not isinstance(key, str) or not key:
                raise _invalid_name(key)
            name = key if not key.rstrip(_UNRESERVED) else _quote(key)
            if value is None:
                append(name)
            elif isinstance(value, str):
                append(f"{name}={value if not value.rstrip(_UNRESERVED) else _quote(value)}")
            else:
                raise TypeError(f"properties[{key!r}]: expected str or None, got {type(value).__name__}")
    except UnicodeEncodeError as exc:
        raise ValueError(f"properties[{key!r}]: not encodable as UTF-8") from exc
    return "&".join(parts)


def _invalid_name(key: object) -> Exception:
    if not isinstance(key, str):
        return TypeError(f"properties: property names must be str, got {type(key).__name__}")
    return ValueError("properties: property names must not be empty")


def decode_property_bag(bag: str) -> dict[str, str | None]:
    """Decode a property bag received from the network.

    Names are decoded with :func:`unquote_component`; a name without ``=`` maps to ``None``. When a
    name repeats, the last value wins.

    Args:
        bag: the bag text, e.g. ``"%24.ct=application%2Fjson&flag"``.

    Returns:
        The decoded properties in bag order; ``{}`` for ``""``.

    Raises:
        ProtocolError: a name is empty (including ``&&`` or a trailing ``&``) or an escape is malformed.
    """
    properties: dict[str, str | None] = {}
    if not bag:
        return properties
    try:
        for item in bag.split("&"):
            key, separator, value = item.partition("=")
            if not key:
                raise ProtocolError("empty property name")
            properties[unquote_component(key)] = unquote_component(value) if separator else None
    except ProtocolError as exc:
        raise ProtocolError(f"malformed property bag {bag!r}: {exc}") from None
    return properties


def validate_application_properties(properties: Mapping[str, str], *, argument: str = "properties") -> dict[str, str]:
    """Check application properties as IoT Hub requires them, and return them as a new dict.

    Names and values are ASCII strings, names are not empty and are not system property keys.
    Both roles use it: the client for what it sends, the emulator for what its caller queues.

    Example:
        >>> validate_application_properties({"alert": "1"})
        {'alert': '1'}

    Raises:
        TypeError: ``properties`` is not a mapping, or a name or value is not a ``str``.
        ValueError: a name is empty, reserved or not ASCII, or a value is not ASCII.
    """
    if not isinstance(properties, Mapping):
        raise TypeError(f"{argument} must be a mapping or None, not {type(properties).__name__}")
    copied = dict(properties)
    for name, value in copied.items():
        if not isinstance(name, str):
            raise TypeError(f"{argument}: names must be str, got {name!r}")
        if not name:
            raise ValueError(f"{argument}: names must not be empty")
        if not name.isascii():
            raise ValueError(f"{argument}: name {name!r} must be ASCII")
        if name in SYSTEM_PROPERTY_KEYS:
            raise ValueError(f"{argument}[{name!r}] is a system property; use the matching argument for it")
        if not isinstance(value, str):
            raise TypeError(f"{argument}[{name!r}] must be a str, not {type(value).__name__}")
        if not value.isascii():
            raise ValueError(f"{argument}[{name!r}] must be ASCII, got {value!r}")
    return copied
