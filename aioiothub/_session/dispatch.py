"""Every PUBLISH from the hub, routed: twin answers to their futures, the rest to bounded buffers.

The dispatcher runs synchronously on the event loop for each inbound PUBLISH and never waits. The
sans-IO :class:`~aioiothub.protocol.device.DeviceProtocol` turns the packet into an event; the
dispatcher decides where it goes and what to do when there is no room:

* cloud-to-device and module-input messages are left unacknowledged (the hub delivers them again
  on the next connection); with room, they wait for their consumer, which acknowledges them;
* desired-property patches are dropped and recovered by a twin reading;
* method requests are answered with 503 at once (the service caller is waiting), on the next
  event-loop turn rather than from inside the transport's callback.

Each of those, and anything malformed, is reported to ``client.errors()``. Every packet but a
buffered message is acknowledged here, on the connection it arrived on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aioiothub._session.background_errors import ConsumerFellBehind, MalformedMessage, MethodNotHandled, StreamName
from aioiothub._session.error_stream import BackgroundErrors
from aioiothub._session.inbound import Buffer, Delivery, InboundStreams
from aioiothub._session.methods import MethodRequest
from aioiothub.exceptions import ConnectionLostError, ProtocolError
from aioiothub.message import Message
from aioiothub.protocol.desired import NotificationOutcome
from aioiothub.protocol.device import (
    CloudToDeviceMessage,
    DesiredPatch,
    DeviceProtocol,
    InputMessage,
    MethodInvoked,
    OutboundPublish,
    TwinResponse,
)
from aioiothub.transports.base import InboundPublish, Transport

__all__ = ["Dispatcher"]


class Dispatcher:
    """Routes what one identity's connections receive.

    Args:
        protocol: the identity's protocol state.
        streams: the buffers consumers read.
        errors: where background errors are reported.
        read_desired_again: starts a twin reading to recover desired patches that did not fit.
        respond_to_method: sends a method response (given to each :class:`MethodRequest`).
    """

    def __init__(
        self,
        protocol: DeviceProtocol[Any],
        streams: InboundStreams,
        errors: BackgroundErrors,
        *,
        read_desired_again: Callable[[], None],
        respond_to_method: Callable[[str, int, bytes], Awaitable[None]],
    ) -> None:
        self._protocol = protocol
        self._streams = streams
        self._errors = errors
        self._read_desired_again = read_desired_again
        self._respond_to_method = respond_to_method

    def __call__(self, inbound: InboundPublish, connection: Transport) -> None:
        """Handle one PUBLISH that arrived on ``connection``."""
        topic = inbound.topic
        try:
            event = self._protocol.receive(topic, inbound.payload)
            if isinstance(event, CloudToDeviceMessage):
                delivery = Delivery(inbound, connection)
                delivery.message = Message.from_wire(event.body, event.properties, acknowledger=delivery)
                self._offer(delivery, self._streams.cloud, "cloud_messages", None)
                return
            if isinstance(event, InputMessage):
                delivery = Delivery(inbound, connection)
                delivery.message = Message.from_wire(
                    event.body, event.properties, input_name=event.input_name, acknowledger=delivery
                )
                routed = self._streams.inputs.route(event.input_name)
                assert routed is not None
                self._offer(delivery, routed[1], "input_messages", routed[0])
                return
            if isinstance(event, TwinResponse):
                if not event.waiter.done():
                    event.waiter.set_result(event)
            elif isinstance(event, DesiredPatch):
                self._on_desired_patch(event.patch)
            elif isinstance(event, MethodInvoked):
                self._on_method_request(event, connection)
        except (ProtocolError, ValueError) as exc:
            self._errors.report(MalformedMessage(topic, exc))
        connection.acknowledge(inbound)

    def _offer(self, delivery: Delivery, buffer: Buffer[Delivery], stream: StreamName, name: str | None) -> None:
        if not buffer.offer(delivery):
            # Left unacknowledged: the hub delivers it again after the next reconnect.
            self._errors.report(ConsumerFellBehind(stream, 1, name))

    def _on_desired_patch(self, patch: dict[str, Any]) -> None:
        buffer = self._streams.desired
        outcome = self._protocol.desired.notification(patch, room=buffer.has_room)
        if outcome is NotificationOutcome.DELIVER:
            buffer.offer(patch)
        elif outcome is NotificationOutcome.READ_TWIN:
            self._errors.report(ConsumerFellBehind("desired_property_patches"))
            self._read_desired_again()

    def _on_method_request(self, event: MethodInvoked, connection: Transport) -> None:
        routed = self._streams.methods.route(event.name)
        if routed is None:
            self.method_not_handled(event.name, event.request_id, connection)
            return
        request = MethodRequest(
            name=event.name,
            payload=event.payload,
            request_id=event.request_id,
            component=event.component,
            command=event.command,
            responder=self._respond_to_method,
        )
        if routed[1].offer(request):
            return
        self._errors.report(ConsumerFellBehind("method_requests", 1, routed[0]))
        self._answer_503(event.request_id, "the method request buffer is full", connection)

    def method_not_handled(self, name: str, request_id: str, connection: Transport | None) -> None:
        """Answer a method request that no loop takes with 503, at once (the caller is waiting)."""
        self._errors.report(MethodNotHandled(name, request_id))
        self._answer_503(request_id, "no handler is listening", connection)

    def _answer_503(self, request_id: str, reason: str, connection: Transport | None) -> None:
        if connection is None:
            return  # not connected: the hub has failed the invocation with the connection
        answer = self._protocol.method_response(request_id, 503, json.dumps({"error": reason}).encode())
        # Sent on the next loop turn, not from inside the transport's message callback: paho holds
        # a non-reentrant lock there that a QoS 0 publish takes again (it would deadlock).
        asyncio.get_running_loop().call_soon(_answer, connection, answer)


def _answer(connection: Transport, answer: OutboundPublish) -> None:
    # A connection that is gone took the invocation with it: the hub has already failed it.
    if connection.connected:
        with contextlib.suppress(ConnectionLostError):
            connection.publish(answer.topic, answer.payload, 0)

