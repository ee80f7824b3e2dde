"""Message size limits, counted the way IoT Hub counts them.

IoT Hub measures a device-to-cloud message as its body plus the values of its system properties plus
the names and values of its application properties, all as UTF-8 bytes -- not the size of the MQTT
packet, and not the size of the Python objects.
"""

from __future__ import annotations

from collections.abc import Mapping

from aioiothub.protocol.properties import SYSTEM_PROPERTY_KEYS

__all__ = [
    "MAX_C2D_BODY_BYTES",
    "MAX_C2D_QUEUE_LENGTH",
    "MAX_METHOD_PAYLOAD_BYTES",
    "MAX_SUBSCRIPTIONS",
    "MAX_TELEMETRY_BYTES",
    "message_wire_size",
]

MAX_TELEMETRY_BYTES = 262144
"""Largest device-to-cloud message, as counted by :func:`message_wire_size` (256 KiB)."""

MAX_C2D_BODY_BYTES = 65536
"""Largest cloud-to-device message body (64 KiB)."""

MAX_METHOD_PAYLOAD_BYTES = 131072
"""Largest direct method request or response payload (128 KiB)."""

MAX_C2D_QUEUE_LENGTH = 50
"""Most cloud-to-device messages IoT Hub keeps queued for one device; it refuses more with 403."""

MAX_SUBSCRIPTIONS = 5
"""Most subscriptions one MQTT connection may hold at once."""


def _utf8_length(text: str) -> int:
    # Property text is ASCII almost always, where the character count is the byte count.
    return len(text) if text.isascii() else len(text.encode())


def message_wire_size(body: bytes, properties: Mapping[str, str | None]) -> int:
    """Compute a message's size as IoT Hub counts it against :data:`MAX_TELEMETRY_BYTES`.

    Args:
        body: the message body.
        properties: system and application properties, keyed by wire name (``$.ct``, ``alert``, ...).

    Returns:
        ``len(body)`` plus the UTF-8 length of every system property value plus the UTF-8 length
        of every application property name and value; a ``None`` value counts as 0.
    """
    size = len(body)
    for key, value in properties.items():
        if key not in SYSTEM_PROPERTY_KEYS:
            size += _utf8_length(key)
        if value is not None:
            size += _utf8_length(value)
    return size
