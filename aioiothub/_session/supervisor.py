"""Keeping one identity connected: connect, reconnect with back-off, renew tokens, judge liveness.

Theory of operation
-------------------
A :class:`ConnectionSupervisor` drives one :class:`~aioiothub.transports.base.Transport` at a time.
:meth:`ConnectionSupervisor.run` is its only long-lived task. It connects, restores every
subscription the application asked for, adopts the connection, then watches it -- until it is
lost, judged dead by the liveness rule (:mod:`aioiothub.protocol.liveness`), or a new SAS token is
due (renewal ahead of expiry, or a token the application pushed) -- and starts over (after a
back-off delay when the end was not planned). The first connection attempt is the caller's: its
failure is raised from ``run`` before ``task_status.started()`` -- unless the session may start
offline (an outbox keeps what is sent meanwhile, :attr:`SessionSettings.may_start_offline`): then
a transient failure (a refused or unreachable hub, not an authentication refusal) says
``started()`` and is retried like a later one. Later failures, including a
SUBACK that does not come while subscriptions are restored, are retried by the reconnect policy;
only authentication and credential failures and an exhausted policy end ``run`` with an error,
which fails every waiting operation.

Operations never talk to a connection that is gone: they take :meth:`ConnectionSupervisor.current`
(waiting for the next connection when there is none). Which token each connection sends, and when
to reconnect for a new one, is the :class:`~aioiothub._session.token_schedule.TokenSchedule`'s decision.
Everything the supervisor recovers from on its own -- a dropped connection, a failed reconnect or
renewal -- is reported to :class:`~aioiothub._session.error_stream.BackgroundErrors` (``client.errors()``).

:class:`~aioiothub._session.session.HubSession` holds a supervisor and builds the operations
(telemetry, twin, methods, messages) on it; it is told what arrives (``on_message``), when a
connection other than the first is up (``on_restored``) and when the supervisor has closed
(``on_closed``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from aioiothub._auth.credentials import Credential
from aioiothub._outbox.outbox import Outbox
from aioiothub._session.background_errors import BackgroundError, ConnectionDropped, ReconnectFailed
from aioiothub._session.clock import Clock, SystemClock
from aioiothub._session.connection_states import StateFeed
from aioiothub._session.error_stream import ERRORS_BACKLOG, BackgroundErrors
from aioiothub._session.in_flight import InFlightPublishes
from aioiothub._session.token_schedule import TokenSchedule
from aioiothub.exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    IoTHubError,
    LossReason,
    unwrap_group,
)
from aioiothub.options import ProxyOptions, ReconnectPolicy
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.device import DeviceProtocol
from aioiothub.protocol.liveness import LivenessMonitor, Verdict
from aioiothub.protocol.sas import device_resource_uri
from aioiothub.transports.base import ConnectParameters, InboundPublish, Transport, TransportFactory, WillMessage

__all__ = ["ConnectionSupervisor", "SessionSettings"]

_log = logging.getLogger("aioiothub")


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
    outbox: Outbox | None = None

    def retry_delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` of something that failed (the reconnect policy's pace)."""
        return (self.reconnect or ReconnectPolicy()).delay(attempt)

    @property
    def may_start_offline(self) -> bool:
        """Whether a first connection that fails for a transient reason is retried in the background.

        With an outbox, what the application sends meanwhile is kept in its file, so a device that
        starts while the hub is unreachable starts anyway; reconnecting must be on to catch up.
        """
        return self.outbox is not None and self.reconnect is not None


class ConnectionSupervisor:
    """Keeps one device or module identity connected to the hub, across reconnects."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        clock: Clock | None = None,
        on_message: Callable[[InboundPublish, Transport], None] | None = None,
        on_restored: Callable[[], None] | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        # What the session on top does with the traffic and the events of the connection.
        self._on_message = on_message or _acknowledge
        self._on_restored = on_restored
        self._on_closed = on_closed
        self.clock: Clock = clock or SystemClock()
        self.protocol: DeviceProtocol[Any] = DeviceProtocol(
            settings.device_id, settings.module_id, desired_hold_limit=settings.inbound_buffer_size
        )
        self.errors = BackgroundErrors(ERRORS_BACKLOG)
        self.tokens = TokenSchedule(
            settings.credential,
            device_resource_uri(settings.hostname, settings.device_id, settings.module_id),
            report=self.errors.report,
            retry_delay=settings.retry_delay,
            timeout=settings.request_timeout,
        )
        self.in_flight = InFlightPublishes(settings.request_timeout, self.clock.monotonic)
        self._connection: Transport | None = None
        self._reported_up = False
        self._state_changed = anyio.Event()
        self._state_listeners: weakref.WeakSet[StateFeed] = weakref.WeakSet()
        self._fatal: BaseException | None = None
        self._closing = False
        self._subscribed_on: Transport | None = None
        self._subscribed: set[str] = set()
        self._subscribe_lock = anyio.Lock(fast_acquire=True)
        # Set when the watched connection is lost, or to end its watch early (a pushed token).
        self._wake: asyncio.Future[None] | None = None
        # How many pushed tokens the live connection's token reflects (see update_token).
        self._live_pushed_count = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        # What ended the last connection that dropped: the cause of giving up when not reconnecting.
        self._last_drop: ConnectionLostError | None = None

    # ----------------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """Whether a connection is up right now."""
        connection = self._connection
        return connection is not None and connection.connected

    @property
    def connection(self) -> Transport | None:
        """The connection in use, if any (it may be dying: :meth:`current` waits for a live one)."""
        return self._connection

    @property
    def task_group(self) -> anyio.abc.TaskGroup | None:
        """The task group of :meth:`run`, while it runs: where the session starts its background tasks."""
        return self._task_group

    def _set_connection(self, connection: Transport | None, *, planned: bool = False) -> None:
        """Make ``connection`` the live one (``None``: there is none) and tell the state observers.

        ``planned``: the connection ends for a reconnect the client chose (a renewed or pushed
        token). Observers are not told: the connection is being replaced, not lost; they hear of
        it only if the new one cannot be made (:meth:`_report_state`).
        """
        self._connection = connection
        self._state_changed.set()
        self._state_changed = anyio.Event()
        if not planned:
            self._report_state(connection is not None)

    def _report_state(self, up: bool) -> None:
        if up == self._reported_up:
            return
        # Compared with what observers were last told, not with the dying connection's state.
        self._reported_up = up
        for listener in list(self._state_listeners):
            listener.offer(up)

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
        """Yield the state now (``True``: connected), then ``True``/``False`` at each change."""
        feed = StateFeed(self._reported_up)
        if self._fatal is not None or self._closing:
            feed.close()
        self._state_listeners.add(feed)
        return feed

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
            except IoTHubError as exc:
                # ConnectionLostError here is a connection that failed while it was being set up
                # (a SUBACK that did not come): as transient as a refused connect.
                transient = isinstance(exc, ConnectError | ConnectionLostError) and not isinstance(
                    exc, AuthenticationError
                )
                if first:
                    if not (transient and self.settings.may_start_offline):
                        raise
                    _log.info("starting offline: %s", exc)
                    task_status.started()  # the caller goes on; the next success is a restoration
                    first = False
                self._report_state(False)  # a planned reconnect that failed: now it is a loss
                failures += 1
                if not transient or policy is None or policy.gives_up_after(failures):
                    self.report(ReconnectFailed(exc, failures, None))
                    if transient and policy is not None:
                        raise ConnectionLostError(f"gave up reconnecting after {failures} attempts: {exc}") from exc
                    raise
                delay = policy.delay(failures)
                self.report(ReconnectFailed(exc, failures, delay), level=logging.INFO)
                await self.clock.sleep(delay)
                continue
            first = False
            failures = 0
            if renew:
                continue
            if policy is None:
                drop = self._last_drop
                reason = drop.reason if drop is not None else None
                raise ConnectionLostError(
                    f"the connection was lost and reconnecting is disabled: {drop}", reason=reason
                ) from drop
            delay = policy.delay(0)
            _log.info("reconnecting in %.1f s", delay)
            await self.clock.sleep(delay)

    def report(self, error: BackgroundError, *, level: int = logging.WARNING) -> None:
        """Report something the session recovers from (``client.errors()`` and the log)."""
        self.errors.report(error, level=level)

    async def _connect_once(self, first: bool, task_status: anyio.abc.TaskStatus[None]) -> bool:
        """One connection from CONNECT to its end; ``True`` when it ended for a planned reconnect."""
        pushed_count = self.tokens.pushed_count
        parameters = await self._connect_parameters(first)
        connection: Transport | None = None

        def on_message(inbound: InboundPublish) -> None:
            # Bound to this connection: what arrives on it is acknowledged on it.
            assert connection is not None
            self._on_message(inbound, connection)

        connection = self.settings.transport(parameters, on_message)
        async with connection:
            await self._restore_subscriptions(connection)
            self._live_pushed_count = pushed_count
            self._set_connection(connection)
            _log.info("connected to %s as %s", parameters.host, parameters.client_id)
            if first:
                task_status.started()
            elif self._on_restored is not None:
                self._on_restored()
            planned = False
            try:
                planned = await self._watch(connection)
            finally:
                self._set_connection(None, planned=planned)
        return planned

    async def _watch(self, connection: Transport) -> bool:
        """Wait until ``connection`` ends; ``True`` when it is time to reconnect with a new token."""
        clock = self.clock
        monitor = LivenessMonitor(keepalive=self.settings.keepalive, ack_timeout=self.settings.liveness_timeout)
        wake = self._wake = asyncio.get_running_loop().create_future()

        def on_lost(_: object) -> None:
            if not wake.done():  # the watch's current wake-up future, not a later watch's
                wake.set_result(None)

        connection.lost.add_done_callback(on_lost)
        while True:
            if self._live_pushed_count < self.tokens.pushed_count:
                _log.info("reconnecting with the SAS token given to update_sas_token")
                return True
            remaining = self.tokens.renew_due - clock.time()
            if remaining <= 0:
                if await self.tokens.renew_ahead(clock.time()):
                    _log.info("reconnecting with a renewed SAS token")
                    return True
                continue  # renewal failed (reported); the current token is still good for a while
            now, last_received, oldest = clock.monotonic(), connection.last_received, self.in_flight.oldest_since()
            check = monitor.check(now=now, last_received=last_received, oldest_unacked_since=oldest)
            if check.verdict is Verdict.PROBE:
                connection.ping()
            elif check.verdict is Verdict.DEAD:
                connection.abort(check.reason)
                self._report_drop(
                    ConnectionLostError(f"the connection is dead: {check.reason}", reason=LossReason.KEEPALIVE_TIMEOUT)
                )
                return False
            until_check = monitor.next_check(now=now, last_received=last_received, oldest_unacked_since=oldest) - now
            await clock.wait(wake, min(remaining, until_check))
            if connection.lost.done():
                error = connection.lost.exception() if not connection.lost.cancelled() else None
                if not isinstance(error, ConnectionLostError):
                    lost = ConnectionLostError(f"the connection was lost: {error}")
                    lost.__cause__ = error
                    error = lost
                self._report_drop(error)
                return False
            if wake.done():
                wake = self._wake = asyncio.get_running_loop().create_future()

    def _report_drop(self, error: ConnectionLostError) -> None:
        self._last_drop = error
        self.report(ConnectionDropped(error, reconnecting=self.settings.reconnect is not None), level=logging.INFO)

    def _wake_watch(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def update_token(self, token: str) -> None:
        """Use ``token`` from now on: reconnect with it and return once that connection is up.

        Raises:
            RuntimeError: the client does not authenticate with a SAS token.
            CredentialError: the token is malformed, expired or scoped to another identity.
            TimeoutError: no connection with the new token within ``request_timeout`` (the token
                stays in use and the client keeps trying).
        """
        self.tokens.push(token, self.clock.time())
        wanted = self.tokens.pushed_count
        self._wake_watch()
        timeout = self.settings.request_timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.current()
                    if self._live_pushed_count >= wanted:
                        return
                    await self._state_changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the client did not reconnect with the new SAS token within {timeout:g} s (request_timeout); "
                "it keeps trying"
            ) from None

    async def _connect_parameters(self, first: bool) -> ConnectParameters:
        settings = self.settings
        password = await self.tokens.password(self.clock.time(), first=first)
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
        self.in_flight.close()
        self.errors.close()
        for listener in list(self._state_listeners):
            listener.close()
        self._state_changed.set()
        if self._on_closed is not None:
            self._on_closed()

    # --------------------------------------------------------- subscriptions

    async def _restore_subscriptions(self, connection: Transport) -> None:
        filters = self.protocol.subscriptions
        self._subscribed_on, self._subscribed = connection, {name for name, _ in filters}
        if filters:
            await _subscribe(connection, filters)

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
                    await _subscribe(connection, [(topic_filter, qos)])
                except ConnectionLostError:
                    continue
                self._subscribed.add(topic_filter)
                return


async def _subscribe(connection: Transport, filters: list[tuple[str, int]]) -> None:
    """Subscribe, giving up the moment the connection is lost.

    A transport may wait for a SUBACK until its timeout even after the connection dropped (aiomqtt
    does); the next connection restores every subscription anyway, so nothing is gained by waiting.
    """
    with anyio.CancelScope() as scope:

        def give_up(_: object) -> None:
            scope.cancel()

        connection.lost.add_done_callback(give_up)
        try:
            await connection.subscribe(filters)
        finally:
            connection.lost.remove_done_callback(give_up)
    if scope.cancelled_caught:
        raise ConnectionLostError("the connection was lost while subscribing")


def _acknowledge(inbound: InboundPublish, connection: Transport) -> None:
    # With nobody on top to route it, a PUBLISH is only acknowledged.
    connection.acknowledge(inbound)
