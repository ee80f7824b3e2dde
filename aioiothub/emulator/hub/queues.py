"""Cloud-to-device messages and module-input messages: one bounded queue per identity.

Theory of operation
-------------------
A message is *queued* when the service sends it, and delivered at once if its identity is connected
(the connection decides whether it holds the matching subscription). Each message remembers the
connection it was last delivered on: a connection delivers only messages not yet delivered on it,
so a new connection gets every unacknowledged message again (its connection flags it DUP). A message
leaves the queue when the device acknowledges it (PUBACK; at once for a QoS 0 subscription) or when
its time to live runs out -- expired messages are purged whenever a queue is looked at. A queue
holding :data:`~aioiothub.protocol.limits.MAX_C2D_QUEUE_LENGTH` messages refuses more with 403.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from aioiothub.emulator.hub.connections import Connection, ConnectionTable
from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.values import check_ttl, iso_time, now_utc
from aioiothub.exceptions import ServiceError
from aioiothub.protocol.connect import client_id
from aioiothub.protocol.limits import MAX_C2D_BODY_BYTES, MAX_C2D_QUEUE_LENGTH, MAX_TELEMETRY_BYTES
from aioiothub.protocol.properties import validate_application_properties
from aioiothub.protocol.topics import c2d_topic, input_topic

__all__ = ["DEFAULT_C2D_TTL", "AckMode", "CloudMessage", "CloudQueues"]

logger = logging.getLogger("aioiothub.emulator")

AckMode: TypeAlias = Literal["none", "positive", "negative", "full"]
"""The delivery feedback a sender asks for (``iothub-ack``)."""

DEFAULT_C2D_TTL: Final = 3600.0
"""Seconds a cloud-to-device message waits for delivery unless the sender says otherwise."""

_ACK_MODES: Final = frozenset({"none", "positive", "negative", "full"})


@dataclass(slots=True, eq=False)
class CloudMessage:
    """A queued cloud-to-device (or module input) message, ready to publish."""

    topic: str
    body: bytes
    expires_at: float
    delivery_count: int = 0
    #: The connection it was last delivered on; a different connection delivers it again.
    delivered_on: object | None = None


def _body_bytes(body: bytes | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"body must be bytes or str, not {type(body).__name__}")


def _application_properties(properties: Mapping[str, str] | None) -> dict[str, str]:
    return {} if properties is None else validate_application_properties(properties)


class CloudQueues:
    """The cloud-to-device and module-input queues of one hub.

    Args:
        connections: where queued messages are delivered.
    """

    __slots__ = ("_connections", "_queues")

    def __init__(self, connections: ConnectionTable) -> None:
        self._connections = connections
        self._queues: dict[IdentityKey, deque[CloudMessage]] = {}

    def add(self, key: IdentityKey) -> None:
        """Give a newly registered identity its empty queue."""
        self._queues[key] = deque()

    async def send_c2d(
        self,
        device_id: str,
        body: bytes | str,
        *,
        properties: Mapping[str, str] | None,
        message_id: str | None,
        correlation_id: str | None,
        user_id: str | None,
        content_type: str | None,
        content_encoding: str | None,
        ack: AckMode,
        ttl: float,
    ) -> str:
        """Queue a cloud-to-device message (see :meth:`Hub.send_c2d <aioiothub.emulator.Hub.send_c2d>`)."""
        data = _body_bytes(body)
        if len(data) > MAX_C2D_BODY_BYTES:
            raise ValueError(f"body is {len(data)} bytes; a cloud-to-device message holds at most {MAX_C2D_BODY_BYTES}")
        if ack not in _ACK_MODES:
            raise ValueError(f"ack must be one of {sorted(_ACK_MODES)}, got {ack!r}")
        message_id = message_id if message_id is not None else str(uuid.uuid4())
        expiry = check_ttl(ttl)
        system: dict[str, str | None] = {"$.mid": message_id, "$.to": f"/devices/{device_id}/messages/devicebound"}
        for name, value in (
            ("$.cid", correlation_id),
            ("$.uid", user_id),
            ("$.ct", content_type),
            ("$.ce", content_encoding),
        ):
            if value is not None:
                system[name] = value
        system["$.exp"] = iso_time(now_utc() + datetime.timedelta(seconds=ttl))
        system["iothub-ack"] = ack
        topic = c2d_topic(device_id, {**system, **_application_properties(properties)})
        await self._enqueue((device_id, None), CloudMessage(topic, data, expiry))
        return message_id

    async def send_to_input(
        self,
        device_id: str,
        module_id: str,
        input_name: str,
        body: bytes | str,
        *,
        properties: Mapping[str, str] | None,
        message_id: str | None,
        ttl: float,
    ) -> str:
        """Queue a message for a module input (see :meth:`Hub.send_to_input <aioiothub.emulator.Hub.send_to_input>`)."""
        data = _body_bytes(body)
        if len(data) > MAX_TELEMETRY_BYTES:
            raise ValueError(f"body is {len(data)} bytes; a routed message holds at most {MAX_TELEMETRY_BYTES}")
        message_id = message_id if message_id is not None else str(uuid.uuid4())
        expiry = check_ttl(ttl)
        system: dict[str, str | None] = {
            "$.mid": message_id,
            "$.to": f"/devices/{device_id}/modules/{module_id}/inputs/{input_name}",
        }
        topic = input_topic(device_id, module_id, input_name, {**system, **_application_properties(properties)})
        await self._enqueue((device_id, module_id), CloudMessage(topic, data, expiry))
        return message_id

    async def _enqueue(self, key: IdentityKey, message: CloudMessage) -> None:
        queue = self._queues[key]
        _purge_expired(queue)
        if len(queue) >= MAX_C2D_QUEUE_LENGTH:
            raise ServiceError(
                f"device queue full: {client_id(*key)!r} already has {MAX_C2D_QUEUE_LENGTH} undelivered messages",
                status=403,
            )
        queue.append(message)
        connection = self._connections.get(key)
        if connection is not None:
            await connection.deliver_queued()

    def length(self, key: IdentityKey) -> int:
        """How many messages wait for the identity (not yet acknowledged nor expired)."""
        queue = self._queues[key]
        _purge_expired(queue)
        return len(queue)

    def undelivered(self, connection: Connection) -> list[CloudMessage]:
        """The queued messages of the connection's identity not yet delivered on it."""
        queue = self._queues[connection.identity.key]
        _purge_expired(queue)
        return [message for message in queue if message.delivered_on is not connection]

    def complete(self, identity: Identity, message: CloudMessage) -> None:
        """Remove an acknowledged message from the identity's queue."""
        queue = self._queues[identity.key]
        # A message that expired while in flight is gone already.
        with contextlib.suppress(ValueError):
            queue.remove(message)


def _purge_expired(queue: deque[CloudMessage]) -> None:
    if not queue:
        return
    now = time.monotonic()
    if any(message.expires_at <= now for message in queue):
        kept = [message for message in queue if message.expires_at > now]
        logger.info("%d cloud-to-device message(s) expired undelivered", len(queue) - len(kept))
        queue.clear()
        queue.extend(kept)
