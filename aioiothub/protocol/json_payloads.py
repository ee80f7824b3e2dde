"""JSON bodies from the network, read so that hostile input is a protocol error and never a crash.

Twin documents, desired and reported patches, method payloads and DPS answers are JSON that the
peer chose. Python's decoder recurses once per nesting level, so a body of 100,000 ``[`` raises
:class:`RecursionError` -- which no caller expects from a parser. Both roles read such bodies here.
"""

from __future__ import annotations

import json
from typing import Any

from aioiothub.exceptions import ProtocolError

__all__ = ["load_json_object", "load_json_payload"]


def load_json_payload(body: bytes | bytearray | memoryview | str, what: str) -> Any:
    """Decode a JSON body sent by the peer.

    Example:
        >>> load_json_payload(b'{"a": [1]}', "method payload")
        {'a': [1]}

    Args:
        body: the raw body (UTF-8 JSON).
        what: names the body in the error message, e.g. ``"desired patch"``.

    Raises:
        ProtocolError: the body is not UTF-8 JSON, or it is nested too deeply to decode.
    """
    try:
        return json.loads(bytes(body) if isinstance(body, bytearray | memoryview) else body)
    except RecursionError:
        raise ProtocolError(f"{what} is JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None


def load_json_object(body: bytes | bytearray | memoryview | str, what: str) -> dict[str, Any]:
    """Like :func:`load_json_payload`, for bodies that must be a JSON object.

    Raises:
        ProtocolError: the body is not JSON, too deeply nested, or not an object.
    """
    value = load_json_payload(body, what)
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is JSON but not an object")
    return value
