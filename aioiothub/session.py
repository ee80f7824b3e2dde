"""The connection lifecycle shared by device and module clients.

Theory of operation
-------------------
A :class:`HubSession` owns at most one :class:`~aioiothub.transport.MqttConnection` at a time.
:meth:`HubSession.run` is its only background task: it connects, restores every subscription the
application asked for, marks the session connected, then waits until the connection is lost or
the SAS token is due for renewal, and starts over (after a back-off delay when the loss was not
planned). The first connection attempt is the caller's: its failure is raised from ``run`` before
``task_status.started()``. Later failures are retried by the reconnect policy; authentication
failures and an exhausted policy end ``run`` with an error, which fails every waiting operation.

Operations never talk to a connection that is gone: they take :meth:`current` (waiting for the
next connection when there is none), and when that connection drops under them they either resend
(telemetry, at-least-once; twin requests, same ``$rid``) on the next one or give up at their
deadline with :class:`TimeoutError`.

Inbound PUBLISHes are dispatched synchronously on the event loop thread by topic: twin responses
resolve ``$rid`` futures; desired patches, method requests, cloud-to-device and module input
messages go into bounded buffers read by the application's ``async for`` loops.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aioiothub.auth import Credential, SasTokenCredential, X509Credential
from aioiothub.exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    IoTHubError,
    ProtocolError,
    ServiceError,
    ThrottledError,
)
from aioiothub.message import Message
from aioiothub.methods import MethodRequest
from aioiothub.options import ProxyOptions, ReconnectPolicy
from aioiothub.protocol import topics
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.sas import device_resource_uri
from aioiothub.transports.aiomqtt import MqttConnection
from aioiothub.transports.base import ConnectParameters, InboundPublish
from aioiothub.twin import DesiredPropertyTracker, Twin

__all__ = ["HubSession", "SessionSettings"]

_log = logging.getLogger("aioiothub")

_TWIN_RESPONSE_PREFIX = topics.filter_prefix(topics.TWIN_RESPONSE_SUBSCRIPTION)
_DESIRED_PREFIX = topics.filter_prefix(topics.TWIN_DESIRED_SUBSCRIPTION)
_METHODS_PREFIX = topics.filter_prefix(topics.METHODS_SUBSCRIPTION)
T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class _TwinResponse:
    status: int
    version: int | None
    body: bytes


class _Buffer(Generic[T]):
    """A bounded inbound buffer: the dispatcher puts without waiting, the application reads."""

    def __init__(self, size: int) -> None:
        self.send: MemoryObjectSendStream[T]
        self.receive: MemoryObjectReceiveStream[T]
        self.send, self.receive = anyio.create_memory_object_stream[T](size)

    def offer(self, item: T) -> bool:
        try:
            self.send.send_nowait(item)
        except anyio.WouldBlock:
            return False
        return True

    def close(self) -> None:
        self.send.close()
        self.receive.close()


@dataclass(slots=True)
class _Delivery:
    """A message waiting for its consumer; it is acknowledged only once taken."""

    message: Message
    inbound: InboundPublish
    connection: MqttConnection


class HubSession:
    """One device or module identity's logical session with the hub, across reconnects."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self._connection: MqttConnection | None = None
        self._state_changed = anyio.Event()
        self._fatal: BaseException | None = None
        self._closing = False
        self._wanted_filters: dict[str, int] = {}
        self._subscribed: tuple[MqttConnection | None, set[str]] = (None, set())
        self._subscribe_lock = anyio.Lock(fast_acquire=True)
        self._window = asyncio.Semaphore(settings.max_in_flight)
        self._next_request_id = 0
        self._twin_requests: dict[str, asyncio.Future[_TwinResponse]] = {}
        self._desired = DesiredPropertyTracker()
        self._desired_wanted = False
        self._desired_stale = False
        self._desired_resync_running = False
        self._desired_missed_version: int | None = None
        self._methods_wanted = False
        # Module input messages go to the consumer of their input name, else to the catch-all (None).
        self._inputs_buffers: dict[str | None, _Buffer[_Delivery]] = {}
        self._state_listeners: list[MemoryObjectSendStream[bool]] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self._c2d_prefix = topics.filter_prefix(topics.c2d_subscription(settings.device_id))
        self._inputs_prefix = (
            topics.filter_prefix(topics.input_subscription(settings.device_id, settings.module_id))
            if settings.module_id is not None
            else None
        )

    # Inbound buffers are created on first use: thousands of clients in one process each need
    # only the kinds they consume.

    @functools.cached_property
    def _desired_buffer(self) -> _Buffer[dict[str, Any]]:
        return _Buffer(self.settings.inbound_buffer_size)

    @functools.cached_property
    def _methods_buffer(self) -> _Buffer[MethodRequest]:
        return _Buffer(self.settings.inbound_buffer_size)

    @functools.cached_property
    def _messages_buffer(self) -> _Buffer[_Delivery]:
        return _Buffer(self.settings.inbound_buffer_size)

    # ----------------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """Whether a connection is up right now."""
        connection = self._connection
        return connection is not None and connection.connected

    def _set_connection(self, connection: MqttConnection | None) -> None:
        was_connected = self.connected
        self._connection = connection
        self._state_changed.set()
        self._state_changed = anyio.Event()
        if self.connected != was_connected:
            for listener in list(self._state_listeners):
                try:
                    listener.send_nowait(self.connected)
                except anyio.WouldBlock:
                    pass  # a slow observer only needs the latest states; it will see the next one
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._state_listeners.remove(listener)

    async def current(self) -> MqttConnection:
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

    async def connection_states(self) -> AsyncIterator[bool]:
        """Yield ``True``/``False`` each time the connection comes up or goes down."""
        send, receive = anyio.create_memory_object_stream[bool](16)
        self._state_listeners.append(send)
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
                self._fatal = exc
            raise
        finally:
            self._task_group = None
            self._fail_everything()

    async def _connect_forever(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        first = True
        failures = 0
        policy = self.settings.reconnect
        while True:
            try:
                renew = await self._connect_once(first, task_status)
            except AuthenticationError:
                raise
            except ConnectError as exc:
                if first or policy is None:
                    raise
                failures += 1
                if policy.gives_up_after(failures):
                    raise ConnectionLostError(f"gave up reconnecting after {failures} attempts: {exc}") from exc
                delay = policy.delay(failures)
                _log.info("reconnect attempt %d failed (%s); next in %.1f s", failures, exc, delay)
                await anyio.sleep(delay)
                continue
            if first:
                first = False
            failures = 0
            if renew:
                continue
            if policy is None:
                raise ConnectionLostError("the connection was lost and reconnecting is disabled")
            delay = policy.delay(0)
            _log.info("connection lost; reconnecting in %.1f s", delay)
            await anyio.sleep(delay)

    async def _connect_once(self, first: bool, task_status: anyio.abc.TaskStatus[None]) -> bool:
        """One connection from CONNECT to its end; ``True`` when it ended for a token renewal."""
        parameters, renew_at = await self._connect_parameters()
        async with MqttConnection(parameters, self._dispatch) as connection:
            await self._restore_subscriptions(connection)
            self._set_connection(connection)
            _log.info("connected to %s as %s", parameters.host, parameters.client_id)
            if first:
                task_status.started()
            try:
                async with anyio.create_task_group() as connection_tasks:
                    if not first and self._desired_wanted:
                        self.request_desired_resync()
                    with anyio.move_on_after(max(0.0, renew_at - time.time())) as renewal:
                        # asyncio.wait, unlike awaiting the future, leaves it intact when cancelled.
                        await asyncio.wait((connection.lost,))
                        _log.info("connection lost: %s", connection.lost.exception())
                    renewing = renewal.cancelled_caught
                    connection_tasks.cancel_scope.cancel()
            finally:
                self._set_connection(None)
            if renewing:
                _log.info("renewing the SAS token")
            return renewing

    async def _connect_parameters(self) -> tuple[ConnectParameters, float]:
        settings = self.settings
        credential = settings.credential
        password: str | None = None
        renew_at = float("inf")
        if not isinstance(credential, X509Credential):
            now = time.time()
            grant = await credential.get_token(
                device_resource_uri(settings.hostname, settings.device_id, settings.module_id), now
            )
            password = grant.token
            lifetime = grant.expiry - now
            if not isinstance(credential, SasTokenCredential) or credential.renewable:
                # Renew ahead of expiry as the SDKs do: 2 minutes early, or a fifth of a short lifetime.
                renew_at = now + max(1.0, lifetime - min(120.0, lifetime / 5))
        parameters = ConnectParameters(
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
            clean_session=False,
            websockets=settings.websockets,
            max_in_flight=settings.max_in_flight,
            connect_timeout=settings.request_timeout,
            proxy=settings.proxy,
        )
        return parameters, renew_at

    def close(self) -> None:
        """Stop reconnecting and fail what still waits (the caller cancels :meth:`run`)."""
        self._closing = True
        self._state_changed.set()

    def _fail_everything(self) -> None:
        error = ConnectionLostError("the client closed")
        if self._fatal is not None and not isinstance(self._fatal, anyio.get_cancelled_exc_class()):
            error = ConnectionLostError(f"the client stopped: {self._fatal}")
        for future in self._twin_requests.values():
            if not future.done():
                future.set_exception(error)
                future.exception()
        self._twin_requests.clear()
        for name in ("_desired_buffer", "_methods_buffer", "_messages_buffer"):
            if name in self.__dict__:  # created on first use
                self.__dict__[name].close()
        for buffer in self._inputs_buffers.values():
            buffer.close()
        for listener in self._state_listeners:
            listener.close()
        self._state_changed.set()

    # --------------------------------------------------------- subscriptions

    async def _restore_subscriptions(self, connection: MqttConnection) -> None:
        filters = list(self._wanted_filters.items())
        self._subscribed = (connection, {name for name, _ in filters})
        if filters:
            await connection.subscribe(filters)

    async def ensure_subscribed(self, topic_filter: str, qos: int) -> None:
        """Subscribe once per connection; later connections restore it before going live."""
        self._wanted_filters[topic_filter] = qos
        connection = self._connection
        subscribed_on, names = self._subscribed
        if connection is not None and subscribed_on is connection and connection.connected and topic_filter in names:
            return
        while True:
            connection = await self.current()
            async with self._subscribe_lock:
                subscribed_on, names = self._subscribed
                if subscribed_on is connection and topic_filter in names:
                    return
                if subscribed_on is not connection:
                    continue
                try:
                    await connection.subscribe([(topic_filter, qos)])
                except ConnectionLostError:
                    continue
                names.add(topic_filter)
                return

    # -------------------------------------------------------------- telemetry

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish with at-least-once delivery across reconnects, within the in-flight window."""
        async with self._window:
            # asyncio's own timeout: this runs once per message, and an anyio cancel scope costs more.
            async with asyncio.timeout(self.settings.request_timeout):
                while True:
                    connection = self._connection
                    if connection is None or not connection.connected:
                        connection = await self.current()
                    try:
                        await connection.publish(topic, payload, qos)
                    except ConnectionLostError:
                        continue
                    return

    # ------------------------------------------------------------------ twin

    def _new_request_id(self) -> str:
        self._next_request_id += 1
        return str(self._next_request_id)

    async def twin_request(self, build_topic: Callable[[str], str], body: bytes) -> _TwinResponse:
        """Send a twin request and wait for its response, resending on a new connection."""
        async with asyncio.timeout(self.settings.request_timeout):
            await self.ensure_subscribed(topics.TWIN_RESPONSE_SUBSCRIPTION, 0)
            request_id = self._new_request_id()
            future: asyncio.Future[_TwinResponse] = asyncio.get_running_loop().create_future()
            self._twin_requests[request_id] = future
            try:
                while not future.done():
                    connection = await self.current()
                    try:
                        connection.publish(build_topic(request_id), body, 0)
                    except ConnectionLostError:
                        continue
                    await asyncio.wait((future, connection.lost), return_when=asyncio.FIRST_COMPLETED)
                response = future.result()
            finally:
                self._twin_requests.pop(request_id, None)
        if response.status == 429:
            raise ThrottledError("the hub throttled the twin request (429)", status=429, request_id=request_id)
        if not 200 <= response.status < 300:
            raise ServiceError(
                f"the hub answered the twin request with {response.status}",
                status=response.status,
                request_id=request_id,
            )
        return response

    async def get_twin(self) -> Twin:
        """Read the whole twin."""
        response = await self.twin_request(topics.twin_get_topic, b"")
        try:
            document = json.loads(response.body)
            desired, reported = document["desired"], document["reported"]
            if not isinstance(desired, dict) or not isinstance(reported, dict):
                raise TypeError("sections are not objects")
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"the hub sent a twin that is not a twin document: {exc}") from None
        return Twin(desired=desired, reported=reported)

    async def update_reported(self, body: bytes) -> int:
        """Send a reported-properties patch; returns the new reported ``$version``."""
        response = await self.twin_request(topics.twin_patch_reported_topic, body)
        if response.version is None:
            raise ProtocolError("the hub acknowledged the reported patch without a $version")
        return response.version

    # --------------------------------------------------------- desired patches

    async def desired_patches(self) -> AsyncIterator[dict[str, Any]]:
        """Yield desired-property patches; the first caller subscribes and reads the baseline."""
        if not self._desired_wanted:
            self._desired_wanted = True
            await self.ensure_subscribed(topics.TWIN_DESIRED_SUBSCRIPTION, 0)
            # The first reading is only the baseline for later resyncs: every notification that
            # arrives once subscribed is delivered, including those the reading already covers.
            self._desired.resync((await self.get_twin()).desired)
        with self._desired_buffer.receive.clone() as receive:
            async for patch in receive:
                yield patch

    def request_desired_resync(self) -> None:
        """Drop notifications until the twin has been re-read and the difference delivered."""
        self._desired_stale = True
        if not self._desired_resync_running and self._task_group is not None:
            self._desired_resync_running = True
            self._task_group.start_soon(self._resync_desired, name="aioiothub desired resync")

    async def _resync_desired(self) -> None:
        """Read the twin and deliver what changed in the desired section while we could not see it."""
        attempt = 0
        try:
            while self._desired_stale:
                self._desired_missed_version = None
                try:
                    twin = await self.get_twin()
                except (IoTHubError, TimeoutError) as exc:
                    attempt += 1
                    delay = (self.settings.reconnect or ReconnectPolicy()).delay(attempt)
                    _log.warning("could not re-read the twin (%s); retrying in %.1f s", exc, delay)
                    await anyio.sleep(delay)
                    continue
                patch = self._desired.resync(twin.desired)
                missed = self._desired_missed_version
                # A notification dropped after the hub produced this twin is newer than it: read again.
                self._desired_stale = missed is not None and (
                    twin.desired_version is None or missed > twin.desired_version
                )
                if patch is not None:
                    await self._desired_buffer.send.send(patch)
        finally:
            self._desired_resync_running = False

    # ---------------------------------------------------------------- methods

    async def method_requests(self) -> AsyncIterator[MethodRequest]:
        """Yield direct method requests."""
        self._methods_wanted = True
        await self.ensure_subscribed(topics.METHODS_SUBSCRIPTION, 0)
        with self._methods_buffer.receive.clone() as receive:
            async for request in receive:
                yield request

    async def _respond_to_method(self, request_id: str, status: int, body: bytes) -> None:
        with anyio.fail_after(self.settings.request_timeout):
            connection = await self.current()
            await connection.publish(topics.method_response_topic(status, request_id), body, 1)

    # ----------------------------------------------- cloud and input messages

    async def cloud_messages(self) -> AsyncIterator[Message]:
        """Yield cloud-to-device messages, each acknowledged once it is taken."""
        await self.ensure_subscribed(topics.c2d_subscription(self.settings.device_id), 1)
        with self._messages_buffer.receive.clone() as receive:
            async for delivery in receive:
                delivery.connection.acknowledge(delivery.inbound)
                yield delivery.message

    async def input_messages(self, input_name: str | None) -> AsyncIterator[Message]:
        """Yield module input messages (all inputs, or only ``input_name``)."""
        assert self.settings.module_id is not None
        buffer = self._inputs_buffer_for(input_name)
        await self.ensure_subscribed(topics.input_subscription(self.settings.device_id, self.settings.module_id), 1)
        with buffer.receive.clone() as receive:
            async for delivery in receive:
                delivery.connection.acknowledge(delivery.inbound)
                yield delivery.message

    def _inputs_buffer_for(self, input_name: str | None) -> _Buffer[_Delivery]:
        buffer = self._inputs_buffers.get(input_name)
        if buffer is not None:
            return buffer
        buffer = self._inputs_buffers[input_name] = _Buffer(self.settings.inbound_buffer_size)
        if input_name is None:
            return buffer
        # Messages for this input that arrived before it had a consumer wait in the catch-all.
        catch_all = self._inputs_buffer_for(None)
        others: list[_Delivery] = []
        while True:
            try:
                delivery = catch_all.receive.receive_nowait()
            except anyio.WouldBlock:
                break
            if delivery.message.input_name == input_name:
                buffer.offer(delivery)
            else:
                others.append(delivery)
        for delivery in others:
            catch_all.offer(delivery)
        return buffer

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, inbound: InboundPublish) -> None:
        connection = self._connection_for_dispatch()
        topic = inbound.topic
        try:
            if topic.startswith(_TWIN_RESPONSE_PREFIX):
                self._on_twin_response(inbound)
            elif topic.startswith(_DESIRED_PREFIX):
                self._on_desired_patch(inbound)
            elif topic.startswith(_METHODS_PREFIX):
                self._on_method_request(inbound, connection)
            elif topic.startswith(self._c2d_prefix):
                parsed_c2d = topics.parse_c2d_topic(topic)
                message = Message.from_wire(inbound.payload, parsed_c2d.properties)
                self._offer_delivery(self._messages_buffer, message, inbound, connection, "cloud-to-device")
                return
            elif self._inputs_prefix is not None and topic.startswith(self._inputs_prefix):
                parsed_input = topics.parse_input_topic(topic)
                message = Message.from_wire(
                    inbound.payload, parsed_input.properties, input_name=parsed_input.input_name
                )
                buffer = self._inputs_buffers.get(parsed_input.input_name) or self._inputs_buffer_for(None)
                self._offer_delivery(buffer, message, inbound, connection, "module input")
                return
            else:
                _log.warning("ignored a message on an unexpected topic %r", topic)
        except (ProtocolError, ValueError) as exc:
            _log.warning("ignored a malformed message on %r: %s", topic, exc)
        if connection is not None:
            connection.acknowledge(inbound)

    def _connection_for_dispatch(self) -> MqttConnection | None:
        # Messages can arrive between CONNACK and the moment the session adopts the connection
        # (a resumed session delivers queued C2D messages at once); they belong to the newest one.
        return self._connection or self._subscribed[0]

    def _offer_delivery(
        self,
        buffer: _Buffer[_Delivery],
        message: Message,
        inbound: InboundPublish,
        connection: MqttConnection | None,
        kind: str,
    ) -> None:
        if connection is None:
            return
        if not buffer.offer(_Delivery(message, inbound, connection)):
            _log.warning(
                "%s buffer full (%d messages): message %r left unacknowledged; the hub redelivers it "
                "after the next reconnect",
                kind,
                self.settings.inbound_buffer_size,
                message.message_id,
            )

    def _on_twin_response(self, inbound: InboundPublish) -> None:
        parsed = topics.parse_twin_response_topic(inbound.topic)
        future = self._twin_requests.get(parsed.request_id)
        if future is None or future.done():
            _log.debug("twin response for unknown request %r", parsed.request_id)
            return
        future.set_result(_TwinResponse(parsed.status, parsed.version, inbound.payload))

    def _on_desired_patch(self, inbound: InboundPublish) -> None:
        parsed = topics.parse_twin_desired_topic(inbound.topic)
        try:
            patch = json.loads(inbound.payload)
        except ValueError:
            raise ProtocolError(f"desired patch on {inbound.topic!r} is not JSON") from None
        if not isinstance(patch, dict):
            raise ProtocolError(f"desired patch on {inbound.topic!r} is not a JSON object")
        if "$version" not in patch and parsed.version is not None:
            patch["$version"] = parsed.version
        if not self._desired_wanted:
            return
        if self._desired_stale:
            version = patch.get("$version")
            if isinstance(version, int):
                self._desired_missed_version = max(version, self._desired_missed_version or version)
            return
        if self._desired_buffer.send.statistics().current_buffer_used >= self.settings.inbound_buffer_size:
            _log.warning("desired-property buffer full; the missed changes will be re-read from the twin")
            self.request_desired_resync()
            return
        if self._desired.accept(patch):
            self._desired_buffer.offer(patch)

    def _on_method_request(self, inbound: InboundPublish, connection: MqttConnection | None) -> None:
        parsed = topics.parse_method_request_topic(inbound.topic)
        try:
            payload = json.loads(inbound.payload) if inbound.payload else None
        except ValueError:
            raise ProtocolError(f"method request {parsed.name!r} carries a payload that is not JSON") from None
        request = MethodRequest(
            name=parsed.name,
            payload=payload,
            request_id=parsed.request_id,
            component=parsed.component,
            command=parsed.command,
            responder=self._respond_to_method,
        )
        if self._methods_wanted and self._methods_buffer.offer(request):
            return
        reason = "the method request buffer is full" if self._methods_wanted else "no handler is listening"
        _log.warning("answered method %r with 503: %s", parsed.name, reason)
        if connection is not None and connection.connected:
            body = json.dumps({"error": reason}).encode()
            connection.publish(topics.method_response_topic(503, parsed.request_id), body, 0)

