"""The supervisor of one identity's connection to the hub, shared by device and module clients.

Theory of operation
-------------------
A :class:`HubSession` drives a sans-IO :class:`~aioiothub.protocol.device.DeviceProtocol` over one
:class:`~aioiothub.transports.base.Transport` at a time. :meth:`HubSession.run` is its only
long-lived task. It connects, restores every subscription the application asked for, adopts the
connection, then watches it -- until it is lost, judged dead by the liveness rule
(:mod:`aioiothub.protocol.liveness`), or the SAS token is due for renewal -- and starts over
(after a back-off delay when the end was not planned). The first connection attempt is the
caller's: its failure is raised from ``run`` before ``task_status.started()``. Later failures,
including a SUBACK that does not come while subscriptions are restored, are retried by the
reconnect policy; only authentication failures and an exhausted policy end ``run`` with an error,
which fails every waiting operation.

Operations never talk to a connection that is gone: they take :meth:`HubSession.current` (waiting
for the next connection when there is none), and when that connection drops under them they either
resend (telemetry, at-least-once; twin requests, same ``$rid``) on the next one or give up at their
deadline with :class:`TimeoutError`.

Inbound PUBLISHes are turned into events by the protocol, synchronously on the event loop: twin
responses resolve the futures the protocol keeps with each ``$rid``; desired patches, method
requests, cloud-to-device and module input messages go into the bounded buffers of
:class:`~aioiothub.inbound.InboundStreams`.

Per-message paths use asyncio primitives directly (a semaphore for the in-flight window, futures
for PUBACKs, one shared timer for every send's deadline in
:class:`~aioiothub.in_flight.InFlightPublishes`): measured, they cost a fraction of their anyio
equivalents (an anyio cancel scope, or even an ``asyncio.timeout``, per message). Everything else
-- lifetimes, task groups, events, buffers -- is anyio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aioiothub.auth import Credential, X509Credential
from aioiothub.clock import Clock, SystemClock
from aioiothub.exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    ProtocolError,
    ServiceError,
    ThrottledError,
    unwrap_group,
)
from aioiothub.in_flight import InFlightPublishes
from aioiothub.inbound import Delivery, InboundStreams
from aioiothub.message import Message
from aioiothub.methods import MethodRequest
from aioiothub.options import ProxyOptions, ReconnectPolicy
from aioiothub.protocol import topics
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.desired import DesiredState, NotificationOutcome
from aioiothub.protocol.device import (
    CloudToDeviceMessage,
    DesiredPatch,
    DeviceProtocol,
    InputMessage,
    MethodInvoked,
    OutboundPublish,
    TwinResponse,
)
from aioiothub.protocol.json_payloads import load_json_object
from aioiothub.protocol.liveness import LivenessMonitor, Verdict
from aioiothub.protocol.sas import device_resource_uri
from aioiothub.transports.base import ConnectParameters, InboundPublish, Transport, TransportFactory, WillMessage
from aioiothub.twin import Twin

__all__ = ["HubSession", "SessionSettings"]

_log = logging.getLogger("aioiothub")

_Waiter = asyncio.Future[TwinResponse[Any]]


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Everything a session needs, already validated by the client constructor."""

    hostname: str
    device_id: str
    module_id: str | None
    credential: Credential
    connect_host: str
    port: int
    websockets: bool
    ssl_context: ssl.SSLContext
    proxy: ProxyOptions | None
    product_info: str
    model_id: str | None
    keepalive: int
    request_timeout: float
    reconnect: ReconnectPolicy | None
    max_in_flight: int
    inbound_buffer_size: int
    transport: TransportFactory
    liveness_timeout: float = 10.0
    clean_session: bool = False
    will: WillMessage | None = None


class HubSession:
    """One device or module identity's logical session with the hub, across reconnects."""

    def __init__(self, settings: SessionSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.protocol: DeviceProtocol[_Waiter] = DeviceProtocol(settings.device_id, settings.module_id)
        self.streams = InboundStreams(settings.inbound_buffer_size)
        self._connection: Transport | None = None
        self._reported_up = False
        self._state_changed = anyio.Event()
        self._state_listeners: list[MemoryObjectSendStream[bool]] = []
        self._fatal: BaseException | None = None
        self._closing = False
        self._subscribed_on: Transport | None = None
        self._subscribed: set[str] = set()
        self._subscribe_lock = anyio.Lock(fast_acquire=True)
        self._window = asyncio.Semaphore(settings.max_in_flight)
        self._in_flight = InFlightPublishes(settings.request_timeout, self.clock.monotonic)
        self._renew_due = float("inf")
        self._resync_running = False
        self._task_group: anyio.abc.TaskGroup | None = None

    # ----------------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """Whether a connection is up right now."""
        connection = self._connection
        return connection is not None and connection.connected

    def _set_connection(self, connection: Transport | None) -> None:
        self._connection = connection
        self._state_changed.set()
        self._state_changed = anyio.Event()
        up = connection is not None
        if up == self._reported_up:
            return
        # Compared with what observers were last told, not with the dying connection's state.
        self._reported_up = up
        for listener in list(self._state_listeners):
            try:
                listener.send_nowait(up)
            except anyio.WouldBlock:
                pass  # a slow observer only needs the latest states; it will see the next one
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._state_listeners.remove(listener)

    async def current(self) -> Transport:
        """The live connection, waiting for the next one when there is none."""
        while True:
            if self._fatal is not None:
                raise ConnectionLostError(f"the client is no longer connected: {self._fatal}") from self._fatal
            if self._closing:
                raise RuntimeError("the client is closed")
            connection = self._connection
            if connection is not None and connection.connected:
                return connection
            await self._state_changed.wait()

    def connection_states(self) -> AsyncIterator[bool]:
        """Yield ``True``/``False`` each time the connection comes up or goes down, from now on."""
        # Registered now, not at the first iteration, so no change after the call is missed.
        send, receive = anyio.create_memory_object_stream[bool](16)
        self._state_listeners.append(send)
        return self._states(send, receive)

    async def _states(
        self, send: MemoryObjectSendStream[bool], receive: MemoryObjectReceiveStream[bool]
    ) -> AsyncIterator[bool]:
        try:
            with receive:
                async for state in receive:
                    yield state
        finally:
            if send in self._state_listeners:
                self._state_listeners.remove(send)
            send.close()

    # ------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, then keep the session connected until cancelled or a fatal error."""
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                await self._connect_forever(task_status)
        except BaseException as exc:
            if self._fatal is None:
                self._fatal = unwrap_group(exc)
            raise
        finally:
            self._task_group = None
            self._fail_everything()

    @property
    def fatal_error(self) -> BaseException | None:
        """What ended the session, once it has failed."""
        return self._fatal

    async def _connect_forever(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        first = True
        failures = 0
        policy = self.settings.reconnect
        while True:
            try:
                renew = await self._connect_once(first, task_status)
            except AuthenticationError:
                raise
            except (ConnectError, ConnectionLostError) as exc:
                # ConnectionLostError here is a connection that failed while it was being set up
                # (a SUBACK that did not come): as transient as a refused connect.
                if first or policy is None:
                    raise
                failures += 1
                if policy.gives_up_after(failures):
                    raise ConnectionLostError(f"gave up reconnecting after {failures} attempts: {exc}") from exc
                delay = policy.delay(failures)
                _log.info("reconnect attempt %d failed (%s); next in %.1f s", failures, exc, delay)
                await self.clock.sleep(delay)
                continue
            first = False
            failures = 0
            if renew:
                continue
            if policy is None:
                raise ConnectionLostError("the connection was lost and reconnecting is disabled")
            delay = policy.delay(0)
            _log.info("reconnecting in %.1f s", delay)
            await self.clock.sleep(delay)

    async def _connect_once(self, first: bool, task_status: anyio.abc.TaskStatus[None]) -> bool:
        """One connection from CONNECT to its end; ``True`` when it ended for a token renewal."""
        parameters = await self._connect_parameters()
        connection: Transport | None = None

        def on_message(inbound: InboundPublish) -> None:
            # Bound to this connection: what arrives on it is acknowledged on it.
            assert connection is not None
            self._dispatch(inbound, connection)

        connection = self.settings.transport(parameters, on_message)
        async with connection:
            await self._restore_subscriptions(connection)
            self._set_connection(connection)
            _log.info("connected to %s as %s", parameters.host, parameters.client_id)
            if first:
                task_status.started()
            elif self.protocol.desired.connection_restored():
                self._start_desired_resync()
            try:
                renewing = await self._watch(connection)
            finally:
                self._set_connection(None)
        return renewing

    async def _watch(self, connection: Transport) -> bool:
        """Wait until ``connection`` ends; ``True`` when it is time to renew the SAS token."""
        clock = self.clock
        monitor = LivenessMonitor(keepalive=self.settings.keepalive, ack_timeout=self.settings.liveness_timeout)
        while True:
            remaining = self._renew_due - clock.time()
            if remaining <= 0:
                _log.info("renewing the SAS token")
                return True
            now, last_received, oldest = clock.monotonic(), connection.last_received, self._in_flight.oldest_since()
            check = monitor.check(now=now, last_received=last_received, oldest_unacked_since=oldest)
            if check.verdict is Verdict.PROBE:
                connection.ping()
            elif check.verdict is Verdict.DEAD:
                _log.info("connection is dead: %s; reconnecting", check.reason)
                connection.abort(check.reason)
                return False
            until_check = monitor.next_check(now=now, last_received=last_received, oldest_unacked_since=oldest) - now
            if await clock.wait(connection.lost, min(remaining, until_check)):
                _log.info("connection lost: %s", connection.lost.exception())
                return False

    async def _connect_parameters(self) -> ConnectParameters:
        settings = self.settings
        credential = settings.credential
        password: str | None = None
        if isinstance(credential, X509Credential):
            self._renew_due = float("inf")
        else:
            now = self.clock.time()
            grant = await credential.get_token(
                device_resource_uri(settings.hostname, settings.device_id, settings.module_id),
                now,
                fresh=now >= self._renew_due,
            )
            password = grant.token
            lifetime = grant.expiry - now
            self._renew_due = float("inf")
            if credential.renewable:
                # Renew ahead of expiry as the SDKs do: 2 minutes early, or a fifth of a short lifetime.
                self._renew_due = now + max(1.0, lifetime - min(120.0, lifetime / 5))
        return ConnectParameters(
            host=settings.connect_host,
            port=settings.port,
            client_id=client_id(settings.device_id, settings.module_id),
            username=username(
                settings.hostname,
                settings.device_id,
                settings.module_id,
                product_info=settings.product_info,
                model_id=settings.model_id,
            ),
            password=password,
            ssl_context=settings.ssl_context,
            keepalive=settings.keepalive,
            clean_session=settings.clean_session,
            websockets=settings.websockets,
            max_in_flight=settings.max_in_flight,
            connect_timeout=settings.request_timeout,
            proxy=settings.proxy,
            will=settings.will,
        )

    def close(self) -> None:
        """Stop reconnecting and fail what still waits (the caller cancels :meth:`run`)."""
        self._closing = True
        self._state_changed.set()

    def _fail_everything(self) -> None:
        error = ConnectionLostError("the client closed")
        if self._fatal is not None and not isinstance(self._fatal, anyio.get_cancelled_exc_class()):
            error = ConnectionLostError(f"the client stopped: {self._fatal}")
        for pending in self.protocol.pending_twin_requests:
            if not pending.waiter.done():
                pending.waiter.set_exception(error)
                pending.waiter.exception()
            self.protocol.end_twin_request(pending.request_id)
        self._in_flight.close()
        self.streams.close()
        for listener in self._state_listeners:
            listener.close()
        self._state_changed.set()

    # --------------------------------------------------------- subscriptions

    async def _restore_subscriptions(self, connection: Transport) -> None:
        filters = self.protocol.subscriptions
        self._subscribed_on, self._subscribed = connection, {name for name, _ in filters}
        if filters:
            await connection.subscribe(filters)

    async def ensure_subscribed(self, topic_filter: str, qos: int) -> None:
        """Subscribe once per connection; later connections restore it before going live."""
        self.protocol.want_subscription(topic_filter, qos)
        connection = self._connection
        if connection is not None and self._subscribed_on is connection and topic_filter in self._subscribed:
            return
        while True:
            connection = await self.current()
            async with self._subscribe_lock:
                if self._subscribed_on is not connection:
                    continue  # a newer connection restored everything, this filter included
                if topic_filter in self._subscribed:
                    return
                try:
                    await connection.subscribe([(topic_filter, qos)])
                except ConnectionLostError:
                    continue
                self._subscribed.add(topic_filter)
                return

    # -------------------------------------------------------------- telemetry

    async def publish(self, outbound: OutboundPublish) -> None:
        """Publish with at-least-once delivery across reconnects, within the in-flight window.

        The deadline (``request_timeout``) counts from this call: waiting for room in the window
        is part of it.
        """
        topic, payload, qos, retain = outbound.topic, outbound.payload, outbound.qos, outbound.retain
        timeout = self.settings.request_timeout
        started = asyncio.get_running_loop().time()
        window = self._window
        waited = window.locked()
        if waited:
            try:
                async with asyncio.timeout_at(started + timeout):
                    await window.acquire()
            except TimeoutError:
                raise TimeoutError(
                    f"the message waited {timeout:g} s (request_timeout) for room among the "
                    f"{self.settings.max_in_flight} unacknowledged messages (max_in_flight) and was not sent"
                ) from None
        else:
            await window.acquire()  # room now: returns without waiting
        try:
            connection = self._connection
            if not waited and connection is not None and connection.connected:
                # The common case: one send on the live connection, its deadline kept by the
                # in-flight table (one timer for all sends instead of one per message).
                try:
                    acknowledged = connection.publish(topic, payload, qos, retain=retain)
                    if qos:
                        self._in_flight.add(acknowledged)
                    await acknowledged
                    return
                except ConnectionLostError:
                    pass  # at-least-once: sent again below, on the next connection
                except TimeoutError:
                    raise self._send_timeout() from None
            try:
                async with asyncio.timeout_at(started + timeout):
                    while True:
                        connection = await self.current()
                        try:
                            acknowledged = connection.publish(topic, payload, qos, retain=retain)
                            if qos:
                                self._in_flight.add(acknowledged)
                            await acknowledged
                        except ConnectionLostError:
                            continue
                        return
            except TimeoutError:
                raise self._send_timeout() from None
        finally:
            window.release()

    def _send_timeout(self) -> TimeoutError:
        timeout = self.settings.request_timeout
        return TimeoutError(f"the hub did not acknowledge the message within {timeout:g} s (request_timeout)")

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

    async def desired_patches(self) -> AsyncIterator[dict[str, Any]]:
        """Yield desired-property patches; the first consumer subscribes and reads the baseline."""
        desired = self.protocol.desired
        if desired.want() or desired.state is DesiredState.BASELINE:
            await self.ensure_subscribed(topics.TWIN_DESIRED_SUBSCRIPTION, 0)
            # The first reading is only the baseline for later resyncs: every notification that
            # arrives once subscribed is delivered, including those the reading already covers.
            if desired.baseline_read(await self._read_desired_section("read")):
                self._start_desired_resync()
        async for patch in self.streams.desired.items():
            yield patch

    def _start_desired_resync(self) -> None:
        if not self._resync_running and self._task_group is not None:
            self._resync_running = True
            self._task_group.start_soon(self._resync_desired, name="aioiothub desired resync")

    async def _resync_desired(self) -> None:
        """Read the twin and deliver what changed in the desired section while we could not see it."""
        desired = self.protocol.desired
        try:
            while desired.state is DesiredState.STALE:
                desired.begin_resync_read()
                result = desired.resync_read(await self._read_desired_section("re-read"))
                if result.patch is not None:
                    await self.streams.desired.send.send(result.patch)
        except (ConnectionLostError, RuntimeError):
            pass  # the client is closing or has failed; nothing is left to deliver to
        finally:
            self._resync_running = False

    async def _read_desired_section(self, what: str) -> dict[str, Any]:
        """The twin's desired section; a throttled, failing or silent hub is asked again after a back-off."""
        attempt = 0
        while True:
            try:
                return (await self.get_twin()).desired
            except (ServiceError, ProtocolError, TimeoutError) as exc:
                if isinstance(exc, ServiceError) and exc.status != 429 and exc.status < 500:
                    raise
                attempt += 1
                delay = (self.settings.reconnect or ReconnectPolicy()).delay(attempt)
                _log.warning("could not %s the twin (%s); retrying in %.1f s", what, exc, delay)
                await self.clock.sleep(delay)

    # ---------------------------------------------------------------- methods

    async def method_requests(self) -> AsyncIterator[MethodRequest]:
        """Yield direct method requests."""
        buffer = self.streams.methods
        await self.ensure_subscribed(topics.METHODS_SUBSCRIPTION, 0)
        async for request in buffer.items():
            yield request

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

    async def cloud_messages(self) -> AsyncIterator[Message]:
        """Yield cloud-to-device messages, each acknowledged once it is taken."""
        buffer = self.streams.cloud
        await self.ensure_subscribed(*self.protocol.cloud_messages_subscription())
        async for delivery in buffer.items():
            delivery.acknowledge()
            yield delivery.message

    async def input_messages(self, input_name: str | None) -> AsyncIterator[Message]:
        """Yield module input messages (all inputs, or only ``input_name``)."""
        buffer = self.streams.input_buffer(input_name)
        await self.ensure_subscribed(*self.protocol.inputs_subscription())
        async for delivery in buffer.items():
            delivery.acknowledge()
            yield delivery.message

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, inbound: InboundPublish, connection: Transport) -> None:
        topic = inbound.topic
        try:
            event = self.protocol.receive(topic, inbound.payload)
            if isinstance(event, CloudToDeviceMessage):
                message = Message.from_wire(event.body, event.properties)
                self._offer(Delivery(message, inbound, connection), self.streams.cloud.offer, "cloud-to-device")
                return
            if isinstance(event, InputMessage):
                message = Message.from_wire(event.body, event.properties, input_name=event.input_name)
                buffer = self.streams.buffer_for_input(event.input_name)
                self._offer(Delivery(message, inbound, connection), buffer.offer, "module input")
                return
            if isinstance(event, TwinResponse):
                if not event.waiter.done():
                    event.waiter.set_result(event)
            elif isinstance(event, DesiredPatch):
                self._on_desired_patch(event.patch)
            elif isinstance(event, MethodInvoked):
                self._on_method_request(event, connection)
        except (ProtocolError, ValueError) as exc:
            _log.warning("ignored a malformed message on %r: %s", topic, exc)
        connection.acknowledge(inbound)

    def _offer(self, delivery: Delivery, offer: Any, kind: str) -> None:
        if not offer(delivery):
            _log.warning(
                "%s buffer full (%d messages): message %r left unacknowledged; the hub redelivers it "
                "after the next reconnect",
                kind,
                self.settings.inbound_buffer_size,
                delivery.message.message_id,
            )

    def _on_desired_patch(self, patch: dict[str, Any]) -> None:
        desired_buffer = self.streams.desired
        outcome = self.protocol.desired.notification(patch, room=desired_buffer.has_room)
        if outcome is NotificationOutcome.DELIVER:
            desired_buffer.offer(patch)
        elif outcome is NotificationOutcome.READ_TWIN:
            _log.warning("desired-property buffer full; the missed changes will be re-read from the twin")
            self._start_desired_resync()

    def _on_method_request(self, event: MethodInvoked, connection: Transport) -> None:
        request = MethodRequest(
            name=event.name,
            payload=event.payload,
            request_id=event.request_id,
            component=event.component,
            command=event.command,
            responder=self._respond_to_method,
        )
        wanted = self.protocol.wants(topics.METHODS_SUBSCRIPTION)
        if wanted and self.streams.methods.offer(request):
            return
        reason = "the method request buffer is full" if wanted else "no handler is listening"
        _log.warning("answered method %r with 503: %s", event.name, reason)
        if connection.connected:
            answer = self.protocol.method_response(event.request_id, 503, json.dumps({"error": reason}).encode())
            connection.publish(answer.topic, answer.payload, 0)
