"""The service side's AMQP nodes: cloud-to-device sends, feedback, file notifications, the events redirect.

Theory of operation
-------------------
:class:`ServiceNodes` serves the addresses IoT Hub's service SDKs attach to, on the connection's
event loop thread, through the engine's link objects (:class:`~aioiothub.emulator.amqp.nodes.Nodes`
hands it every link it does not serve itself):

* ``/messages/devicebound`` (a link the client sends on): each message names its device in ``to``
  (``/devices/{id}/messages/devicebound``) and is queued like
  :meth:`Hub.send_c2d <aioiothub.emulator.Hub.send_c2d>` queues it, with its message id,
  correlation id, user id, content type and encoding, absolute expiry and application properties,
  ``iothub-ack`` among them. Queueing may deliver at once, which writes to the device's connection,
  so :meth:`ServiceNodes.received` only notes the message and :meth:`ServiceNodes.finish` -- awaited
  by the connection after each read -- queues it and settles its delivery: accepted, or rejected
  with the condition the SDKs translate (``amqp:not-found`` for an unknown device,
  ``amqp:resource-limit-exceeded`` for a full queue, ``amqp:link:message-size-exceeded`` for a body
  over 64 KiB, ``amqp:invalid-field`` for anything else malformed).
* ``/messages/serviceBound/feedback`` and ``/messages/serviceBound/filenotifications`` (links the
  client receives on): the hub-wide queues of
  :mod:`~aioiothub.emulator.hub.service_bound`. Feedback goes out as JSON arrays of up to
  :data:`FEEDBACK_BATCH` records, file notifications one per message; each delivery stays unsettled
  until the client accepts it (gone) or releases it (back to the queue, as is whatever a link or
  connection held when it ended).
* ``/messages/events/ConsumerGroups/{group}/Partitions/{id}``: what an IoT Hub connection string
  reads from; answered, as IoT Hub answers it, by detaching with ``amqp:link:redirect`` naming the
  Event Hubs-compatible address.

Every node needs a token granting ``ServiceConnect`` (put on ``$cbs``, or given as the SASL PLAIN
password).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from proton import Condition, Delivery, Link, Message, symbol

from aioiothub.emulator.amqp.cbs import Authorizations, normalize_address
from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.queues import DEFAULT_C2D_TTL, AckMode, BodyTooLarge
from aioiothub.emulator.hub.service_bound import Loan, ServiceBoundQueue
from aioiothub.exceptions import ServiceError

__all__ = ["FEEDBACK_BATCH", "FEEDBACK_CONTENT_TYPE", "FILE_NOTIFICATION_CONTENT_TYPE", "ServiceNodes"]

logger = logging.getLogger("aioiothub.emulator")

FEEDBACK_BATCH: Final = 64
"""The most feedback records one feedback message carries."""
FEEDBACK_CONTENT_TYPE: Final = "application/vnd.microsoft.iothub.feedback.json"
FILE_NOTIFICATION_CONTENT_TYPE: Final = "application/vnd.microsoft.iothub.filenotification.json"

_DEVICEBOUND: Final = "messages/devicebound"
_FEEDBACK: Final = "messages/servicebound/feedback"
_FILE_NOTIFICATIONS: Final = "messages/servicebound/filenotifications"
_TO: Final = re.compile(r"^/devices/(?P<id>[^/]+)/messages/devicebound/?$")
_EVENTS: Final = re.compile(
    r"^(?:amqps?://[^/]+)?/?messages/events/ConsumerGroups/(?P<group>[^/]+)/Partitions/(?P<id>[^/]+)/?$", re.I
)


@dataclass(frozen=True, slots=True)
class _Send:
    link: Link
    delivery: Delivery
    message: Message


@dataclass(eq=False, slots=True)
class _Reader:
    link: Link
    queue: ServiceBoundQueue[Any]
    batch: int
    render: Callable[[list[Any]], Message]
    loans: dict[Delivery, Loan[Any]]
    tags: int = 0


class _Refused(Exception):
    def __init__(self, condition: str, description: str) -> None:
        super().__init__(description)
        self.condition = condition


class ServiceNodes:
    """The service nodes of one AMQP connection (see the module docstring).

    Args:
        core: the hub.
        authorizations: the connection's tokens.
        hostname: the hub's host name.
        event_hub_name: the built-in endpoint's event hub name (for redirects).
        amqps_port: the AMQPS port a redirect names.
    """

    def __init__(
        self, core: HubCore, authorizations: Authorizations, *, hostname: str, event_hub_name: str, amqps_port: int
    ) -> None:
        self._core = core
        self._authorizations = authorizations
        self._hostname = hostname
        self._event_hub_name = event_hub_name
        self._amqps_port = amqps_port
        self._senders: set[Link] = set()
        self._sends: list[_Send] = []
        self._readers: list[_Reader] = []

    def _path(self, address: str | None) -> str:
        return normalize_address(address or "", self._hostname)

    # --- attach and detach -------------------------------------------------------------------

    def attach_incoming(self, link: Link) -> tuple[str, str] | None:
        """Open a link the client sends on; ``(condition, description)`` when it must be refused."""
        address = link.remote_target.address or ""
        if self._path(address) != _DEVICEBOUND:
            return "amqp:not-found", f"no node {address!r} to send to"
        if not self._authorizations.allows(address, "ServiceConnect"):
            return "amqp:unauthorized-access", f"no valid token with ServiceConnect for {address!r}"
        self._senders.add(link)
        return None

    def attach_outgoing(self, link: Link) -> tuple[str, str, dict[symbol, Any] | None] | None:
        """Open a link the client receives on; ``(condition, description, info)`` when it is refused."""
        address = link.remote_source.address or ""
        path = self._path(address)
        queues: dict[str, tuple[ServiceBoundQueue[Any], int, Callable[[list[Any]], Message]]] = {
            _FEEDBACK: (self._core.queues.feedback_outbox, FEEDBACK_BATCH, _feedback_message),
            _FILE_NOTIFICATIONS: (self._core.file_notifications, 1, _file_notification_message),
        }
        events = _EVENTS.match(address)
        if path not in queues and events is None:
            return "amqp:not-found", f"no node {address!r} to receive from", None
        if not self._authorizations.allows(address, "ServiceConnect"):
            return "amqp:unauthorized-access", f"no valid token with ServiceConnect for {address!r}", None
        if events is not None:
            return "amqp:link:redirect", "read the Event Hubs-compatible endpoint", self._redirect(*events.groups())
        queue, batch, render = queues[path]
        self._readers.append(_Reader(link, queue, batch, render, {}))
        return None

    def _redirect(self, group: str, partition: str) -> dict[symbol, Any]:
        entity = f"{self._event_hub_name}/ConsumerGroups/{group}/Partitions/{partition}"
        address = f"amqps://{self._hostname}:{self._amqps_port}/{entity}"
        return {
            symbol("hostname"): self._hostname,
            symbol("network-host"): self._hostname,
            symbol("port"): self._amqps_port,
            symbol("address"): address,
        }

    def detached(self, link: Link) -> None:
        """``link`` ended: what it held unsettled goes back to its queue."""
        self._senders.discard(link)
        for reader in [reader for reader in self._readers if reader.link == link]:
            self._release(reader)
            self._readers.remove(reader)

    def closed(self) -> None:
        """The connection ended."""
        for reader in self._readers:
            self._release(reader)
        self._readers.clear()
        self._senders.clear()
        self._sends.clear()

    @staticmethod
    def _release(reader: _Reader) -> None:
        for loan in reader.loans.values():
            reader.queue.settle(loan, keep=True)
        reader.loans.clear()

    # --- cloud-to-device sends -----------------------------------------------------------------

    def received(self, link: Link, delivery: Delivery, message: Message) -> None:
        """Note a message sent to ``/messages/devicebound``; :meth:`finish` queues it."""
        self._sends.append(_Send(link, delivery, message))

    @property
    def unfinished(self) -> bool:
        """Whether :meth:`finish` has work."""
        return bool(self._sends)

    async def finish(self) -> None:
        """Queue the messages :meth:`received` noted and settle their deliveries."""
        sends, self._sends = self._sends, []
        for send in sends:
            try:
                await self._queue(send.message)
            except _Refused as refused:
                logger.info("cloud-to-device message over AMQP rejected: %s", refused)
                send.delivery.local.condition = Condition(refused.condition, str(refused))
                send.delivery.update(Delivery.REJECTED)
            else:
                send.delivery.update(Delivery.ACCEPTED)
            send.delivery.settle()
            send.link.flow(1)

    async def _queue(self, message: Message) -> None:
        match = _TO.match(message.address or "")
        if match is None:
            raise _Refused(
                "amqp:invalid-field", f"'to' must be /devices/{{id}}/messages/devicebound, not {message.address!r}"
            )
        device_id = match["id"]
        try:
            self._core.registry.lookup(device_id)
        except ValueError:
            raise _Refused("amqp:not-found", f"device {device_id!r} is not registered") from None
        body = _body(message.body)
        raw: dict[Any, Any] = message.properties or {}
        properties = {str(name): _text(value) for name, value in raw.items()}
        # Checked by the queue, as every other field is: a bad one is a ValueError, refused below.
        ack = cast(AckMode, properties.pop("iothub-ack", "none"))
        ttl = DEFAULT_C2D_TTL
        if message.expiry_time:
            # An absolute expiry in the past still queues the message: it expires at once, with feedback.
            ttl = max(float(message.expiry_time) - time.time(), 0.001)
        try:
            message_id = await self._core.queues.send_c2d(
                device_id,
                body,
                properties=properties,
                message_id=_identifier(message.id),
                correlation_id=_identifier(message.correlation_id),
                user_id=_text(message.user_id) if message.user_id else None,
                content_type=message.content_type or None,
                content_encoding=message.content_encoding or None,
                ack=ack,
                ttl=ttl,
            )
        except ServiceError as exc:
            raise _Refused("amqp:resource-limit-exceeded", str(exc)) from None
        except BodyTooLarge as exc:
            raise _Refused("amqp:link:message-size-exceeded", str(exc)) from None
        except ValueError as exc:
            raise _Refused("amqp:invalid-field", str(exc)) from None
        self._core.report_service_call(device_id, None, f"cloud-to-device message {message_id} queued over AMQP")

    # --- feedback and file notifications -------------------------------------------------------

    def pump(self) -> bool:
        """Send each reader what its credit allows of what its queue holds; whether any was sent."""
        sent = False
        for reader in self._readers:
            while reader.link.credit > 0 and (loan := reader.queue.take(reader.batch)) is not None:
                reader.tags += 1
                delivery = reader.link.delivery(str(reader.tags))
                reader.link.send(reader.render(loan.items).encode())
                reader.link.advance()
                reader.loans[delivery] = loan
                sent = True
        return sent

    def updated(self, link: Link, delivery: Delivery) -> None:
        """The client settled (or changed its mind about) a delivery on one of our links."""
        for reader in self._readers:
            if reader.link != link:
                continue
            loan = reader.loans.pop(delivery, None)
            if loan is None:
                return
            outcome = delivery.remote_state
            if outcome in (Delivery.ACCEPTED, Delivery.REJECTED):
                reader.queue.settle(loan, keep=False)
                delivery.settle()
            elif outcome in (Delivery.RELEASED, Delivery.MODIFIED) or delivery.settled:
                reader.queue.settle(loan, keep=True)
                delivery.settle()
            else:
                reader.loans[delivery] = loan  # a state that is not an outcome yet
            return


def _feedback_message(records: list[Any]) -> Message:
    body = json.dumps([record.as_dict() for record in records], separators=(",", ":")).encode()
    return Message(
        body=body,
        id=str(uuid.uuid4()),
        address="/messages/servicebound/feedback",
        content_type=symbol(FEEDBACK_CONTENT_TYPE),
        content_encoding=symbol("utf-8"),
        inferred=True,
    )


def _file_notification_message(notifications: list[Any]) -> Message:
    (notification,) = notifications
    return Message(
        body=json.dumps(notification.as_dict(), separators=(",", ":")).encode(),
        id=str(uuid.uuid4()),
        address="/messages/serviceBound/filenotifications",
        content_type=symbol(FILE_NOTIFICATION_CONTENT_TYPE),
        content_encoding=symbol("utf-8"),
        inferred=True,
    )


def _body(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise _Refused("amqp:invalid-field", f"the body must be a data section or a string, not {type(body).__name__}")


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("amqp:invalid-field", "a binary property is not UTF-8") from None
    return str(value)


def _identifier(value: object) -> str | None:
    # Message ids arrive as strings, UUIDs (Node sends UUID-shaped ids as AMQP uuids), integers or binary.
    if value is None or value == "":
        return None
    return _text(value)

