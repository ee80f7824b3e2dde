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

A message delivered :data:`MAX_DELIVERY_COUNT` times without an acknowledgement is dead-lettered
(removed) instead of being delivered once more, and a purge removes every message of one identity.

A cloud-to-device message sent with ``ack`` ``positive`` or ``full`` leaves a ``Success`` feedback
record when it is acknowledged; one sent with ``negative`` or ``full`` leaves an ``Expired``,
``DeliveryCountExceeded`` or ``Purged`` record when it leaves the queue otherwise
(:meth:`CloudQueues.feedback`). Each record is also put on :attr:`CloudQueues.feedback_outbox`,
which back ends read over AMQP (``/messages/serviceBound/feedback``). Queueing and removal are
reported to the :class:`~aioiothub.emulator.hub.observer.StateObserver`.
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

import anyio

from aioiothub.emulator.hub.connections import Connection, ConnectionTable
from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.observer import NO_OBSERVER, StateObserver
from aioiothub.emulator.hub.service_bound import ServiceBoundQueue
from aioiothub.emulator.hub.values import Broadcast, check_ttl, iso_time, now_utc
from aioiothub.exceptions import ServiceError
from aioiothub.protocol.connect import client_id
from aioiothub.protocol.limits import MAX_C2D_BODY_BYTES, MAX_C2D_QUEUE_LENGTH, MAX_TELEMETRY_BYTES
from aioiothub.protocol.properties import validate_application_properties
from aioiothub.protocol.topics import c2d_topic, input_topic

__all__ = [
    "DEFAULT_C2D_TTL",
    "MAX_DELIVERY_COUNT",
    "AckMode",
    "BodyTooLarge",
    "CloudMessage",
    "CloudQueues",
    "FeedbackRecord",
    "FeedbackStatus",
]

logger = logging.getLogger("aioiothub.emulator")

AckMode: TypeAlias = Literal["none", "positive", "negative", "full"]
"""The delivery feedback a sender asks for (``iothub-ack``)."""

DEFAULT_C2D_TTL: Final = 3600.0
"""Seconds a cloud-to-device message waits for delivery unless the sender says otherwise."""

MAX_DELIVERY_COUNT: Final = 10
"""How many times a cloud-to-device message is delivered before it is dead-lettered (IoT Hub's default)."""

FeedbackStatus: TypeAlias = Literal["Success", "Expired", "DeliveryCountExceeded", "Rejected", "Purged"]
"""How a cloud-to-device message left its queue, as a feedback record says it."""

_DESCRIPTIONS: Final[dict[str, str]] = {
    "Success": "Success",
    "Expired": "Message expired",
    "DeliveryCountExceeded": "Message delivery count exceeded",
    "Rejected": "Message rejected",
    "Purged": "Message purged",
}
_ACK_MODES: Final = frozenset({"none", "positive", "negative", "full"})
_FEEDBACK_KEPT: Final = 1000


class BodyTooLarge(ValueError):
    """A cloud-to-device or routed message body over its limit (the REST routes answer 400, AMQP
    ``amqp:link:message-size-exceeded``)."""


@dataclass(slots=True, eq=False)
class CloudMessage:
    """A queued cloud-to-device (or module input) message, ready to publish."""

    topic: str
    body: bytes
    expires_at: float
    delivery_count: int = 0
    #: The connection it was last delivered on; a different connection delivers it again.
    delivered_on: object | None = None
    #: ``$.mid``, and the feedback the sender asked for (cloud-to-device messages).
    message_id: str = ""
    ack: str = "none"
    enqueued_time: datetime.datetime | None = None


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """The outcome of a cloud-to-device message whose sender asked for feedback (``ack``).

    Attributes:
        original_message_id: the message's id.
        device_id: the device it was sent to.
        status: ``"Success"`` (acknowledged), ``"Expired"`` (its time to live ran out),
            ``"DeliveryCountExceeded"`` (delivered too often unacknowledged) or ``"Purged"``.
        enqueued_time: when the outcome was recorded (UTC).
        device_generation_id: the device's generation id.
    """

    original_message_id: str
    device_id: str
    status: str
    enqueued_time: datetime.datetime
    device_generation_id: str = ""

    @property
    def description(self) -> str:
        """The status in words, as IoT Hub writes it (``"Message expired"``)."""
        return _DESCRIPTIONS.get(self.status, self.status)

    def as_dict(self) -> dict[str, str]:
        """The record as IoT Hub's feedback JSON writes it."""
        return {
            "originalMessageId": self.original_message_id,
            "deviceId": self.device_id,
            "statusCode": self.status,
            "description": self.description,
            "enqueuedTimeUtc": iso_time(self.enqueued_time),
            "deviceGenerationId": self.device_generation_id,
        }


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

    __slots__ = (
        "_connections",
        "_feedback",
        "_feedback_added",
        "_generations",
        "_queues",
        "feedback_outbox",
        "observer",
    )

    def __init__(self, connections: ConnectionTable) -> None:
        self._connections = connections
        self._queues: dict[IdentityKey, deque[CloudMessage]] = {}
        self._generations: dict[IdentityKey, str] = {}
        self._feedback: deque[FeedbackRecord] = deque(maxlen=_FEEDBACK_KEPT)
        self._feedback_added = Broadcast()
        #: Feedback records not yet taken by a back end over AMQP.
        self.feedback_outbox: ServiceBoundQueue[FeedbackRecord] = ServiceBoundQueue()
        #: Told of every message queued and removed (see :mod:`aioiothub.emulator.storage.state_store`).
        self.observer: StateObserver = NO_OBSERVER

    def add(self, key: IdentityKey, generation_id: str = "") -> None:
        """Give a newly registered identity its empty queue (``generation_id`` goes into its feedback)."""
        self._queues[key] = deque()
        self._generations[key] = generation_id

    def remove(self, key: IdentityKey) -> None:
        """Forget the queue of a deleted identity."""
        self._queues.pop(key, None)
        self._generations.pop(key, None)

    def restore(self, key: IdentityKey, message: CloudMessage) -> None:
        """Put back a message loaded from a store, after those already queued."""
        self._queues[key].append(message)

    def queued(self, key: IdentityKey) -> list[CloudMessage]:
        """The messages waiting for the identity, oldest first."""
        queue = self._queues[key]
        self._purge(key, queue)
        return list(queue)

    def feedback(self, device_id: str | None = None) -> list[FeedbackRecord]:
        """The feedback records kept (the latest 1000), oldest first, optionally of one device."""
        return [record for record in self._feedback if device_id is None or record.device_id == device_id]

    async def wait_feedback(self, count: int, device_id: str | None, timeout: float) -> list[FeedbackRecord]:  # noqa: ASYNC109
        """Wait until at least ``count`` records match and return them (:class:`TimeoutError` after ``timeout``)."""
        with anyio.fail_after(timeout):
            while len(records := self.feedback(device_id)) < count:
                await self._feedback_added.wait()
        return records

    def _record_feedback(self, key: IdentityKey, message: CloudMessage, status: FeedbackStatus) -> None:
        wanted = ("positive", "full") if status == "Success" else ("negative", "full")
        if key[1] is None and message.ack in wanted:
            record = FeedbackRecord(message.message_id, key[0], status, now_utc(), self._generations.get(key, ""))
            self._feedback.append(record)
            self.feedback_outbox.put(record)
            self._feedback_added.notify()

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
            limit = MAX_C2D_BODY_BYTES
            raise BodyTooLarge(f"body is {len(data)} bytes; a cloud-to-device message holds at most {limit}")
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
        message = CloudMessage(topic, data, expiry, message_id=message_id, ack=ack, enqueued_time=now_utc())
        await self._enqueue((device_id, None), message)
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
        message = CloudMessage(topic, data, expiry, message_id=message_id, enqueued_time=now_utc())
        await self._enqueue((device_id, module_id), message)
        return message_id

    async def _enqueue(self, key: IdentityKey, message: CloudMessage) -> None:
        queue = self._queues[key]
        self._purge(key, queue)
        if len(queue) >= MAX_C2D_QUEUE_LENGTH:
            raise ServiceError(
                f"device queue full: {client_id(*key)!r} already has {MAX_C2D_QUEUE_LENGTH} undelivered messages",
                status=403,
            )
        queue.append(message)
        self.observer.message_queued(key, message)
        connection = self._connections.get(key)
        if connection is not None:
            await connection.deliver_queued()

    def length(self, key: IdentityKey) -> int:
        """How many messages wait for the identity (not yet acknowledged nor expired)."""
        queue = self._queues[key]
        self._purge(key, queue)
        return len(queue)

    def undelivered(self, connection: Connection) -> list[CloudMessage]:
        """The queued messages of the connection's identity not yet delivered on it.

        A message already delivered :data:`MAX_DELIVERY_COUNT` times is dead-lettered instead.
        """
        key = connection.identity.key
        queue = self._queues[key]
        self._purge(key, queue)
        worn = [m for m in queue if m.delivered_on is not connection and m.delivery_count >= MAX_DELIVERY_COUNT]
        for message in worn:
            logger.info(
                "cloud-to-device message %s dead-lettered after %d deliveries",
                message.message_id,
                message.delivery_count,
            )
            self._remove(key, queue, message, "DeliveryCountExceeded")
        return [message for message in queue if message.delivered_on is not connection]

    def purge(self, key: IdentityKey) -> int:
        """Remove every message waiting for the identity; how many there were."""
        queue = self._queues[key]
        self._purge(key, queue)
        messages = list(queue)
        for message in messages:
            self._remove(key, queue, message, "Purged")
        return len(messages)

    def _remove(
        self, key: IdentityKey, queue: deque[CloudMessage], message: CloudMessage, status: FeedbackStatus
    ) -> None:
        queue.remove(message)
        self.observer.message_removed(key, message)
        self._record_feedback(key, message, status)

    def complete(self, identity: Identity, message: CloudMessage) -> None:
        """Remove an acknowledged message from the identity's queue."""
        queue = self._queues.get(identity.key)
        if queue is None:
            return  # the identity was deleted while the message was in flight
        # A message that expired while in flight is gone already.
        with contextlib.suppress(ValueError):
            queue.remove(message)
            self.observer.message_removed(identity.key, message)
            self._record_feedback(identity.key, message, "Success")

    def _purge(self, key: IdentityKey, queue: deque[CloudMessage]) -> None:
        if not queue:
            return
        now = time.monotonic()
        if any(message.expires_at <= now for message in queue):
            kept = [message for message in queue if message.expires_at > now]
            logger.info("%d cloud-to-device message(s) expired undelivered", len(queue) - len(kept))
            for message in queue:
                if message.expires_at <= now:
                    self.observer.message_removed(key, message)
                    self._record_feedback(key, message, "Expired")
            queue.clear()
            queue.extend(kept)
