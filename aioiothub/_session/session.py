"""One identity's session with the hub: the operations devices and modules share, over a supervisor.

Theory of operation
-------------------
A :class:`HubSession` holds a :class:`~aioiothub._session.supervisor.ConnectionSupervisor` (which
keeps the connection up, renews tokens and reports what it recovers from) and offers the operations
on it. It
drives the sans-IO :class:`~aioiothub.protocol.device.DeviceProtocol`: telemetry and twin requests
go out as its publishes, and what arrives is routed by the :class:`~aioiothub._session.dispatch.Dispatcher`
-- twin responses to the futures the protocol keeps with each ``$rid``; desired patches, method
requests, cloud-to-device and module input messages to the bounded buffers of
:class:`~aioiothub._session.inbound.InboundStreams`.

When a connection drops under an operation it either resends (telemetry, at-least-once; twin
requests, same ``$rid``) on the next one or gives up at its deadline with :class:`TimeoutError`.
After a reconnect the desired section is re-read, so that no desired change is lost.

Per-message paths use asyncio primitives directly (a semaphore for the in-flight window, futures
for PUBACKs, one shared timer for every send's deadline in
:class:`~aioiothub._session.in_flight.InFlightPublishes`): measured, they cost a fraction of their anyio
equivalents (an anyio cancel scope, or even an ``asyncio.timeout``, per message). Everything else
-- lifetimes, task groups, events, buffers -- is anyio.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc

from aioiothub._session.background_errors import DesiredResyncFailed
from aioiothub._session.clock import Clock
from aioiothub._session.dispatch import Dispatcher
from aioiothub._session.inbound import InboundStreams
from aioiothub._session.methods import MethodRequest
from aioiothub._session.supervisor import ConnectionSupervisor, SessionSettings
from aioiothub._session.twin import Twin
from aioiothub.exceptions import ConnectionLostError, ProtocolError, SendTimeoutError, ServiceError, ThrottledError
from aioiothub.message import Message
from aioiothub.protocol import topics
from aioiothub.protocol.desired import DesiredState
from aioiothub.protocol.device import OutboundPublish, TwinResponse
from aioiothub.protocol.json_payloads import load_json_object
from aioiothub.transports.base import InboundPublish, Transport

__all__ = ["HubSession", "SessionSettings"]

_Waiter = asyncio.Future[TwinResponse[Any]]


class HubSession:
    """One device or module identity's logical session with the hub, across reconnects."""

    def __init__(self, settings: SessionSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.streams = InboundStreams(settings.inbound_buffer_size)
        self.supervisor = ConnectionSupervisor(
            settings,
            clock=clock,
            on_message=self._dispatch,
            on_restored=self._connection_restored,
            on_closed=self.streams.close,
        )
        self.protocol = self.supervisor.protocol
        self.errors = self.supervisor.errors
        self.clock = self.supervisor.clock
        self._in_flight = self.supervisor.in_flight  # read on every send
        self._window = asyncio.Semaphore(settings.max_in_flight)
        self._resync_running = False
        self._dispatcher = Dispatcher(
            self.protocol,
            self.streams,
            self.errors,
            read_desired_again=self._start_desired_resync,
            respond_to_method=self._respond_to_method,
        )

    def _dispatch(self, inbound: InboundPublish, connection: Transport) -> None:
        self._dispatcher(inbound, connection)

    def _connection_restored(self) -> None:
        if self.protocol.desired.connection_restored():
            self._start_desired_resync()

    # ------------------------------------------------ the supervisor's lifetime

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, then keep the session connected until cancelled or a fatal error."""
        await self.supervisor.run(task_status=task_status)

    def close(self) -> None:
        """Stop reconnecting and fail what still waits (the caller cancels :meth:`run`)."""
        self.supervisor.close()

    @property
    def connected(self) -> bool:
        """Whether a connection is up right now."""
        return self.supervisor.connected

    @property
    def fatal_error(self) -> BaseException | None:
        """What ended the session, once it has failed."""
        return self.supervisor.fatal_error

    async def current(self) -> Transport:
        """The live connection, waiting for the next one when there is none."""
        return await self.supervisor.current()

    def connection_states(self) -> AsyncIterator[bool]:
        """Yield the state now (``True``: connected), then ``True``/``False`` at each change."""
        return self.supervisor.connection_states()

    async def ensure_subscribed(self, topic_filter: str, qos: int) -> None:
        """Subscribe once per connection; later connections restore it before going live."""
        await self.supervisor.ensure_subscribed(topic_filter, qos)

    async def update_token(self, token: str) -> None:
        """Reconnect with ``token`` (see :meth:`ConnectionSupervisor.update_token`)."""
        await self.supervisor.update_token(token)

    # -------------------------------------------------------------- telemetry

    async def publish(self, outbound: OutboundPublish) -> None:
        """Publish with at-least-once delivery across reconnects, within the in-flight window.

        The deadline (``request_timeout``) counts from this call: waiting for room in the window
        is part of it.
        """
        timeout = self.settings.request_timeout
        started = asyncio.get_running_loop().time()
        window = self._window
        waited = window.locked()
        if waited:
            try:
                async with asyncio.timeout_at(started + timeout):
                    await window.acquire()
            except TimeoutError:
                raise SendTimeoutError(
                    f"the message waited {timeout:g} s (request_timeout) for room among the "
                    f"{self.settings.max_in_flight} unacknowledged messages (max_in_flight) and was not sent",
                    sent=False,
                ) from None
        else:
            await window.acquire()  # room now: returns without waiting
        sent = False  # whether the PUBLISH left on some connection: the hub may have it then
        try:
            connection = self.supervisor.connection
            if not waited and connection is not None and connection.connected:
                # The common case: one send on the live connection, its deadline kept by the
                # in-flight table (one timer for all sends instead of one per message).
                try:
                    acknowledged = self._send_once(connection, outbound)
                    sent = True
                    await acknowledged
                    return
                except ConnectionLostError:
                    pass  # at-least-once: sent again below, on the next connection
                except TimeoutError:
                    raise self._send_timeout(sent=True) from None
            try:
                async with asyncio.timeout_at(started + timeout):
                    while True:
                        connection = await self.current()
                        try:
                            acknowledged = self._send_once(connection, outbound)
                            sent = True
                            await acknowledged
                        except ConnectionLostError:
                            continue
                        return
            except TimeoutError:
                raise self._send_timeout(sent=sent) from None
        finally:
            window.release()

    def send_on(self, connection: Transport, outbound: OutboundPublish) -> asyncio.Future[None]:
        """Hand ``outbound`` to ``connection`` once; its acknowledgement, failing at ``request_timeout``.

        For senders that keep their own order and resend (the outbox's delivery).

        Raises:
            ConnectionLostError: the connection is gone.
        """
        return self._send_once(connection, outbound)

    def _send_once(self, connection: Transport, outbound: OutboundPublish) -> asyncio.Future[None]:
        """Hand ``outbound`` to ``connection``; the in-flight table keeps a QoS 1 send's deadline."""
        acknowledged = connection.publish(outbound.topic, outbound.payload, outbound.qos, retain=outbound.retain)
        if outbound.qos:
            self._in_flight.add(acknowledged)
        return acknowledged

    def _send_timeout(self, *, sent: bool) -> SendTimeoutError:
        timeout = self.settings.request_timeout
        if sent:
            return SendTimeoutError(
                f"the message was sent but the hub did not acknowledge it (PUBACK) within {timeout:g} s "
                "(request_timeout): the hub may have it",
                sent=True,
            )
        return SendTimeoutError(
            f"the message was not sent: there was no connection to the hub for {timeout:g} s (request_timeout)",
            sent=False,
        )

    # ------------------------------------------------------------------ twin

    async def twin_request(self, kind: str, body: bytes) -> TwinResponse[Any]:
        """Send a twin request and wait for its response, resending it on a new connection."""
        timeout = self.settings.request_timeout
        try:
            async with asyncio.timeout(timeout):
                response = await self._twin_round_trip(kind, body)
        except TimeoutError:
            raise TimeoutError(
                f"the hub did not answer the twin {kind} request within {timeout:g} s (request_timeout)"
            ) from None
        if response.status == 429:
            raise ThrottledError(
                "the hub throttled the twin request (429)", status=429, request_id=response.request_id
            )
        if not 200 <= response.status < 300:
            raise ServiceError(
                f"the hub answered the twin {kind} request with {response.status}",
                status=response.status,
                request_id=response.request_id,
            )
        return response

    async def _twin_round_trip(self, kind: str, body: bytes) -> TwinResponse[Any]:
        await self.ensure_subscribed(topics.TWIN_RESPONSE_SUBSCRIPTION, 0)
        future: _Waiter = asyncio.get_running_loop().create_future()
        pending = self.protocol.begin_twin_request(kind, body, future)
        publish = pending.publish
        try:
            while not future.done():
                connection = await self.current()
                try:
                    connection.publish(publish.topic, publish.payload, publish.qos)
                except ConnectionLostError:
                    continue
                # Same $rid on the next connection if this one drops first.
                await asyncio.wait((future, connection.lost), return_when=asyncio.FIRST_COMPLETED)
            return future.result()
        finally:
            self.protocol.end_twin_request(pending.request_id)

    async def get_twin(self) -> Twin:
        """Read the whole twin."""
        response = await self.twin_request("get", b"")
        document = load_json_object(response.body, "twin document")
        desired, reported = document.get("desired"), document.get("reported")
        if not isinstance(desired, dict) or not isinstance(reported, dict):
            raise ProtocolError("the hub sent a twin document without desired and reported objects")
        return Twin(desired=desired, reported=reported)

    async def update_reported(self, body: bytes) -> int:
        """Send a reported-properties patch; returns the new reported ``$version``."""
        response = await self.twin_request("patch", body)
        if response.version is None:
            raise ProtocolError("the hub acknowledged the reported patch without a $version")
        return response.version

    # --------------------------------------------------------- desired patches

    async def start_desired(self) -> Twin | None:
        """Make sure desired notifications flow; returns the twin when this call read the baseline.

        The first consumer subscribes and reads the twin once: that reading is only the baseline
        for later resyncs, so every notification that arrives once subscribed is delivered,
        including those the reading already covers.
        """
        desired = self.protocol.desired
        if not (desired.want() or desired.state is DesiredState.BASELINE):
            return None
        await self.ensure_subscribed(topics.TWIN_DESIRED_SUBSCRIPTION, 0)
        twin = await self._read_twin_retrying("read")
        if desired.baseline_read(twin.desired):
            self._start_desired_resync()
        return twin

    async def desired_patches(self) -> AsyncIterator[dict[str, Any]]:
        """Yield desired-property patches; the first consumer subscribes and reads the baseline."""
        await self.start_desired()
        async for patch in self.streams.desired.items():
            yield patch

    def _start_desired_resync(self) -> None:
        task_group = self.supervisor.task_group
        if not self._resync_running and task_group is not None:
            self._resync_running = True
            task_group.start_soon(self._resync_desired, name="aioiothub desired resync")

    async def _resync_desired(self) -> None:
        """Read the twin and deliver what changed in the desired section while we could not see it.

        What to deliver is decided only once the consumer's buffer has room, and queued in the same
        step (no await in between): a live notification handled in a gap could otherwise be
        queued ahead of this older patch. Until then notifications are held by the state machine.
        """
        desired = self.protocol.desired
        buffer = self.streams.desired
        try:
            while desired.state is DesiredState.STALE:
                desired.begin_resync_read()
                twin = await self._read_twin_retrying("re-read")
                await buffer.wait_for_room()
                result = desired.resync_read(twin.desired, room=buffer.room)
                for patch in result.patches:
                    buffer.offer(patch)
        except (ConnectionLostError, RuntimeError):
            pass  # the client is closing or has failed; nothing is left to deliver to
        finally:
            self._resync_running = False

    async def _read_twin_retrying(self, what: str) -> Twin:
        """The twin; a throttled, failing or silent hub is asked again after a back-off."""
        attempt = 0
        while True:
            try:
                return await self.get_twin()
            except (ServiceError, ProtocolError, TimeoutError) as exc:
                if isinstance(exc, ServiceError) and exc.status != 429 and exc.status < 500:
                    raise
                attempt += 1
                delay = self.settings.retry_delay(attempt)
                self.supervisor.report(DesiredResyncFailed(exc, delay))
                await self.clock.sleep(delay)

    # ---------------------------------------------------------------- methods

    async def method_requests(self, name: str | None = None) -> AsyncIterator[MethodRequest]:
        """Yield direct method requests: those named ``name``, or (``None``) every other one.

        Once the loop ends, its method is no longer this loop's: requests still waiting for it go
        to a catch-all loop if one runs, else they are answered with 503 at once.
        """
        methods = self.streams.methods
        buffer = methods.join(name)
        try:
            await self.ensure_subscribed(topics.METHODS_SUBSCRIPTION, 0)
            async for request in buffer.items():
                yield request
        finally:
            for request in methods.leave(name):
                self._dispatcher.method_not_handled(request.name, request.request_id, self.supervisor.connection)

    async def _respond_to_method(self, request_id: str, status: int, body: bytes) -> None:
        timeout = self.settings.request_timeout
        publish = self.protocol.method_response(request_id, status, body)
        try:
            async with asyncio.timeout(timeout):
                connection = await self.current()
                await connection.publish(publish.topic, publish.payload, publish.qos)
        except TimeoutError:
            raise TimeoutError(
                f"the hub did not acknowledge the method response within {timeout:g} s (request_timeout)"
            ) from None

    # ----------------------------------------------- cloud and input messages

    async def cloud_messages(self, *, manual_ack: bool = False) -> AsyncIterator[Message]:
        """Yield cloud-to-device messages, acknowledged once taken (or by the application)."""
        buffer = self.streams.cloud
        await self.ensure_subscribed(*self.protocol.cloud_messages_subscription())
        async for delivery in buffer.items():
            if not manual_ack:
                delivery.acknowledge()
            yield delivery.message

    async def input_messages(self, input_name: str | None, *, manual_ack: bool = False) -> AsyncIterator[Message]:
        """Yield module input messages (all inputs, or only ``input_name``).

        Once the loop ends, messages still waiting for it go to a catch-all loop, or wait there,
        unacknowledged, for the next loop (the hub keeps them queued until they are acknowledged).
        """
        inputs = self.streams.inputs
        buffer = inputs.join(input_name)
        try:
            await self.ensure_subscribed(*self.protocol.inputs_subscription())
            async for delivery in buffer.items():
                if not manual_ack:
                    delivery.acknowledge()
                yield delivery.message
        finally:
            inputs.leave(input_name)
