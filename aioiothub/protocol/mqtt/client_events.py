"""What the client-role MQTT session (:mod:`.client_session`) reports, and the rules it checks them by.

The events are frozen dataclasses, as the codec's packets are. Two kinds of inbound packet are not
wrapped in an event of their own, because they are the per-message path and an extra object per
message is measurable at fleet rates:

* a PUBACK is reported as the *token* the caller gave when it sent the PUBLISH (the native
  transport's publish future), so acknowledging a message costs no allocation;
* an inbound PUBLISH is reported as the codec's own :class:`~.packets.Publish` packet.

:func:`connack_refused` turns a refused CONNACK into the library's exception, and
:func:`check_publish_qos` states the QoS rule every transport applies to what it sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aioiothub.exceptions import AuthenticationError, ConnectError, DeviceDisabledError, ProtocolError
from aioiothub.protocol.connect import (
    CONNACK_BAD_CREDENTIALS,
    CONNACK_NOT_AUTHORIZED,
    CONNACK_REASONS,
    CONNACK_SERVER_UNAVAILABLE,
)

__all__ = [
    "SUBACK_FAILURE",
    "ConnectionAccepted",
    "ConnectionRefused",
    "LinkDead",
    "PingDue",
    "ProtocolViolation",
    "SubscribeAcknowledged",
    "check_publish_qos",
    "connack_refused",
]

SUBACK_FAILURE: Final = 0x80
"""The SUBACK return code of a filter the server refused."""


@dataclass(frozen=True, slots=True)
class ConnectionAccepted:
    """CONNACK 0: the connection is up; ``session_present`` says the hub kept a previous session."""

    session_present: bool


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    """A CONNACK that refused the connection, with the library's exception for it (not raised yet)."""

    return_code: int | None
    error: ConnectError


@dataclass(frozen=True, slots=True)
class SubscribeAcknowledged:
    """The SUBACK of a SUBSCRIBE in flight: one granted QoS per filter, in order, 0x80 for a refusal."""

    packet_id: int
    granted: tuple[int, ...]
    token: object

    @property
    def refused(self) -> tuple[int, ...]:
        """The positions of the filters the server refused (SUBACK return code 0x80)."""
        return tuple(index for index, code in enumerate(self.granted) if code == SUBACK_FAILURE)


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The server broke the protocol: the connection must end, with ``error`` as the cause."""

    reason: str
    error: ProtocolError


@dataclass(frozen=True, slots=True)
class PingDue:
    """Nothing crossed the link for a whole keep-alive: send ``data`` (a PINGREQ) now."""

    data: bytes


@dataclass(frozen=True, slots=True)
class LinkDead:
    """A PINGREQ went unanswered for its whole allowance: drop the connection without DISCONNECT."""

    reason: str


def check_publish_qos(qos: int) -> None:
    """The QoS rule for what a client publishes: 0 or 1 only.

    Raises:
        ValueError: ``qos`` is anything else (IoT Hub closes the connection on QoS 2).
    """
    if qos != 0 and qos != 1:
        raise ValueError(f"qos must be 0 or 1, not {qos!r}")


def connack_refused(code: int | None) -> ConnectError:
    """The error for a CONNACK that refused the connection with return code ``code``.

    CONNACK 3 ("server unavailable") is what IoT Hub answers a disabled device: the error says so
    (:class:`DeviceDisabledError`), where a bare "server unavailable" would send the user looking
    at the network.
    """
    reason = CONNACK_REASONS.get(code, "unknown reason") if code is not None else "unknown reason"
    if code in (CONNACK_BAD_CREDENTIALS, CONNACK_NOT_AUTHORIZED):
        return AuthenticationError(f"the hub refused the credentials (CONNACK {code}: {reason})", return_code=code)
    if code == CONNACK_SERVER_UNAVAILABLE:
        return DeviceDisabledError(
            f"the hub refused the connection (CONNACK {code}: {reason}): the device may be disabled in "
            "the hub (IoT Hub answers a disabled device, or a module of one, this way)",
            return_code=code,
        )
    return ConnectError(f"the hub refused the connection (CONNACK {code}: {reason})", return_code=code)
