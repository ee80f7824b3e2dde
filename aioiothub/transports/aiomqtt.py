"""The default transport: aiomqtt over paho-mqtt, behind :class:`~aioiothub.transports.base.Transport`.

Nothing else in the package imports aiomqtt or paho (``tests/unit/test_import_boundaries.py``).
Every error they raise is translated here into the library's own exceptions, so callers above this
module only ever see :mod:`aioiothub.exceptions`.

Theory of operation
-------------------
An :class:`MqttConnection` is one network connection: entering it connects (TLS or WebSocket) and
waits for CONNACK; leaving it disconnects. aiomqtt owns the socket, its registration with the event
loop, keep-alive pings, CONNECT/CONNACK and SUBSCRIBE/SUBACK, all through its public API.

The client role's rules are :class:`~aioiothub.protocol.mqtt.ClientSession`'s, as for the native
transport; paho frames the packets and picks their ids, so this module feeds the session events
("CONNACK with this code", "PUBLISH sent as mid N", "PUBACK for N", "a message arrived") and does
what it answers: the session keeps the publish futures by packet id, maps a refused CONNACK to the
library's exception, refuses QoS 2 both ways and says when a PUBACK may go out.

Three things aiomqtt's public API cannot do, so this module reaches the paho client aiomqtt wraps
(``aiomqtt.Client._client``); ``tests/client/test_transport_hooks.py`` fails loudly if that changes:

* **PUBACK after the application has the message.** paho's ``manual_ack`` mode is switched on and
  :meth:`MqttConnection.acknowledge` sends the PUBACK, so a cloud-to-device message is completed
  only once a consumer took it (at-least-once, as IoT Hub intends).
* **Publishes that fail the moment the connection drops.** aiomqtt's ``publish`` waits for its
  PUBACK until a timeout even when the socket is already gone, and scans every pending call on each
  publish. Here each QoS 1 publish is a future the session keeps by packet id, resolved from paho's
  ``on_publish`` and failed with :class:`ConnectionLostError` from ``on_disconnect``, so the client
  can re-send it on the next connection at once.
* **The CONNACK as it arrives.** paho's ``on_connect`` (chained to aiomqtt's) tells the session,
  before paho hands over any message that came in the same read.
* **Inbound dispatch without a queue hop.** paho's ``on_message`` hands each PUBLISH straight to
  the caller's handler on the event loop thread.
* **One write per event-loop turn.** aiomqtt registers a socket writer through
  ``call_soon_threadsafe`` for every packet paho queues (a self-pipe wake-up each, and two loop
  turns before the bytes leave); here the first packet of a turn leaves at once, the others queued
  in that turn are written together on the next, and the socket is watched for writability only
  while the kernel buffer is full.
* **Sockets closed when a handshake fails.** paho leaves the TLS socket open when the TLS or
  WebSocket handshake fails; its ``_ssl_wrap_socket`` is replaced by one that remembers the socket
  and ``_create_socket`` is wrapped to close it on failure.
* **Liveness.** paho resets its own "last received" time whenever it sends a PINGREQ, so the
  session's liveness rule could not trust it; inbound PUBLISH, PUBACK, SUBACK and PINGRESP stamp
  :attr:`MqttConnection.last_received` here instead (PINGRESP through paho's ``_handle_pingresp``),
  and :meth:`MqttConnection.ping` sends a PINGREQ through paho's ``_send_pingreq``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
import threading
from collections.abc import Sequence
from typing import Any, Self

import aiomqtt
import aiomqtt.exceptions
import anyio
import anyio.lowlevel
import paho.mqtt.client as paho

from aioiothub.exceptions import ConnectError, ConnectionLostError, LossReason
from aioiothub.options import ProxyOptions
from aioiothub.protocol.connect import WEBSOCKET_PATH
from aioiothub.protocol.mqtt import (
    ConnectionRefused,
    SessionState,
    check_publish_qos,
    connack_refused,
)
from aioiothub.transports.base import (
    ConnectParameters,
    InboundPublish,
    MessageHandler,
    describe_loss,
    fail_waiters,
)
from aioiothub.transports.event_loop import require_selector_event_loop
from aioiothub.transports.session_connection import SessionConnection

__all__ = ["SUPPORTED_AIOMQTT", "MqttConnection"]

_log = logging.getLogger("aioiothub.transport")


class _ConnectionLossIsInfo(logging.Filter):
    """paho logs a closed socket at ERROR; a lost connection the session recovers from is INFO."""

    _MESSAGES = ("failed to receive on socket", "timeout on socket", "Client is not connected")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self._MESSAGES):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_log.addFilter(_ConnectionLossIsInfo())

#: The aiomqtt releases whose internals the hooks above were written against (see pyproject.toml).
SUPPORTED_AIOMQTT = ((2, 5), (3, 0))

#: paho reports a refused CONNACK as an MQTT 5 reason code; IoT Hub speaks MQTT 3.1.1 return codes.
_CONNACK_RETURN_CODES = {
    "Unsupported protocol version": 1,
    "Client identifier not valid": 2,
    "Server unavailable": 3,
    "Bad user name or password": 4,
    "Not authorized": 5,
}

_DISCONNECT_TIMEOUT = 2.0


def _proxy_settings(proxy: ProxyOptions) -> aiomqtt.ProxySettings:
    try:
        import socks  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ValueError("proxy needs the PySocks package: pip install 'aioiothub[proxy]'") from exc
    kinds = {"http": socks.HTTP, "socks4": socks.SOCKS4, "socks5": socks.SOCKS5}
    return aiomqtt.ProxySettings(
        proxy_type=kinds[proxy.proxy_type],
        proxy_addr=proxy.address,
        proxy_port=proxy.port,
        proxy_username=proxy.username,
        proxy_password=proxy.password,
    )


def _read_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _connack_return_code(code: object) -> int | None:
    # paho reports a CONNACK's code as a ReasonCode (MQTT 5 naming) or, from older paths, an int.
    if isinstance(code, int):
        return code
    if code is None:
        return None
    return _CONNACK_RETURN_CODES.get(str(code))


class MqttConnection(SessionConnection):
    """One MQTT 3.1.1 connection to IoT Hub.

    Args:
        parameters: where and how to connect.
        on_message: called on the event loop thread for each inbound PUBLISH. It must not raise;
            QoS 1 messages stay unacknowledged until :meth:`acknowledge` is called.
    """

    def __init__(self, parameters: ConnectParameters, on_message: MessageHandler) -> None:
        require_selector_event_loop(asyncio.get_running_loop())
        # paho keeps the keep-alive itself: the session's keep-alive deadlines are not used here.
        super().__init__(parameters, on_message)
        self._refusal: ConnectionRefused | None = None
        will = parameters.will
        self._client = aiomqtt.Client(
            parameters.host,
            parameters.port,
            username=parameters.username,
            password=parameters.password,
            identifier=parameters.client_id,
            clean_session=parameters.clean_session,
            transport="websockets" if parameters.websockets else "tcp",
            websocket_path=WEBSOCKET_PATH if parameters.websockets else None,
            keepalive=parameters.keepalive,
            timeout=parameters.connect_timeout,
            tls_context=parameters.ssl_context,
            max_inflight_messages=parameters.max_in_flight,
            proxy=_proxy_settings(parameters.proxy) if parameters.proxy else None,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will is not None else None,
            logger=_log,
        )
        self._paho: paho.Client = self._client._client
        self._paho.manual_ack_set(True)
        self._paho.on_message = self._handle_message
        self._paho.on_publish = self._handle_puback
        self._aiomqtt_on_connect = self._paho.on_connect
        self._paho.on_connect = self._handle_connack
        self._aiomqtt_on_disconnect = self._paho.on_disconnect
        self._paho.on_disconnect = self._handle_disconnect
        self._paho.on_socket_register_write = self._handle_register_write
        self._paho.on_socket_unregister_write = self._handle_unregister_write
        self._paho_handle_pingresp = self._paho._handle_pingresp
        self._paho._handle_pingresp = self._handle_pingresp  # type: ignore[method-assign]
        self._tls_socket: ssl.SSLSocket | None = None
        self._paho_create_socket = self._paho._create_socket
        self._paho._create_socket = self._create_socket  # type: ignore[method-assign]
        self._paho._ssl_wrap_socket = self._wrap_tls  # type: ignore[method-assign,assignment]
        # What the last read found (an error, or b"" at end of stream): paho only logs it and reports
        # a bare "connection lost", so the loss is explained from this.
        self._read_end: BaseException | None = None
        self._read_eof = False
        self._paho_sock_recv = self._paho._sock_recv
        self._paho._sock_recv = self._sock_recv  # type: ignore[method-assign]
        self._loop_thread = threading.get_ident()
        self._flush_scheduled = False
        self._writer_fd: int | None = None

    async def __aenter__(self) -> Self:
        # A drop that aiomqtt notices without paho's on_disconnect (an exception in its socket
        # callbacks) must still fail our in-flight publishes. The callback goes on before connecting:
        # aiomqtt replaces a future that completed while it connected (a drop right after CONNACK),
        # and the replaced one's exception must still be read and counted as the loss it is.
        watched = self._client._disconnected
        watched.add_done_callback(self._aiomqtt_disconnected)
        if self._session.state is SessionState.IDLE:  # a second entry fails in aiomqtt, as it always did
            self._session.connect_sent()
        try:
            # paho connects in a worker thread that cannot be interrupted: shielding (bounded by
            # the connect timeout) lets a cancelled connect finish and then be closed, instead of
            # leaving a socket open behind our back.
            with anyio.CancelScope(shield=True):
                await self._client.__aenter__()
        except aiomqtt.exceptions.MqttConnectError as exc:
            self._mark_lost("the hub refused the connection")
            refusal = self._refusal
            raise (refusal.error if refusal is not None else connack_refused(_connack_return_code(exc.rc))) from None
        except aiomqtt.MqttError as exc:
            self._mark_lost("could not connect")
            raise ConnectError(f"could not connect to {self._parameters.host}: {exc}") from None
        except BaseException:
            self._mark_lost("connecting was interrupted")
            self._force_close()
            raise
        self._entered = True
        self._session.last_received = self._loop.time()
        if anyio.current_effective_deadline() == -math.inf:
            await self.__aexit__(None, None, None)
            await anyio.lowlevel.checkpoint()
        if self._client._disconnected is not watched:
            self._client._disconnected.add_done_callback(self._aiomqtt_disconnected)
        return self

    async def _close(self) -> None:
        if self.lost.done():
            self._force_close()
            return
        try:
            with anyio.move_on_after(_DISCONNECT_TIMEOUT, shield=True):
                await self._client.__aexit__(None, None, None)
        except aiomqtt.MqttError:
            pass
        finally:
            self._mark_lost("the connection was closed", None, LossReason.CLOSED)
            self._force_close()

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False) -> asyncio.Future[None]:
        """Send a PUBLISH; the returned future completes on PUBACK (at once for QoS 0).

        Raises:
            ConnectionLostError: the connection is already gone (the future fails with it when the
                connection drops before the PUBACK).
            ValueError: ``qos`` is not 0 or 1 (IoT Hub closes the connection on QoS 2).
        """
        check_publish_qos(qos)
        if self.lost.done():
            raise ConnectionLostError("not connected")
        info = self._paho.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionLostError(f"could not publish: {paho.error_string(info.rc)}")
        if self.lost.done():
            # Writing the packet at once can be what found the connection gone.
            raise ConnectionLostError("the connection was lost while publishing")
        future = self._loop.create_future()
        if qos == 0:
            future.set_result(None)
        else:
            self._session.publish_sent(info.mid, future)
        return future

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe to topic filters at once and return the granted QoS of each."""
        if self.lost.done():
            raise ConnectionLostError("not connected")
        # aiomqtt waits for the SUBACK until its timeout even once the connection is gone: race it
        # against the loss, so that a drop during SUBSCRIBE is noticed at once.
        subscribing = asyncio.ensure_future(
            self._client.subscribe(list(filters), timeout=self._parameters.connect_timeout)
        )
        # Whatever ends this call (a drop, a cancellation), the subscribe task's own error is read.
        subscribing.add_done_callback(_read_error)
        try:
            await asyncio.wait((subscribing, self.lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not subscribing.done():
                subscribing.cancel()
        if not subscribing.done() or subscribing.cancelled():
            raise ConnectionLostError("the connection was lost while subscribing")
        try:
            granted = subscribing.result()
        except aiomqtt.MqttError as exc:
            raise ConnectionLostError(f"subscribe failed: {exc}") from None
        self._session.last_received = self._loop.time()
        return [code if isinstance(code, int) else int(code.value) for code in granted]

    def acknowledge(self, message: InboundPublish) -> None:
        """Send the PUBACK for a QoS 1 message (nothing for QoS 0 or once the connection is gone)."""
        if self._session.may_acknowledge(message.qos):
            self._paho.ack(message.packet_id, 1)

    def ping(self) -> None:
        """Send a PINGREQ now (a liveness probe)."""
        if not self.lost.done():
            self._paho._send_pingreq()

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without DISCONNECT (the session judged it dead: no answer in time)."""
        self._mark_lost(reason, None, LossReason.KEEPALIVE_TIMEOUT)
        self._force_close()

    # paho callbacks: they run on the event loop thread and must never raise into paho.

    def _handle_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            _log.warning("dropped a message whose topic is not UTF-8: %r", message._topic)
            self._paho.ack(message.mid, message.qos)
            return
        self._session.last_received = self._loop.time()
        violation = self._session.message_received(topic, message.qos)
        if violation is not None:
            self._mark_lost(violation.reason, violation.error, LossReason.PROTOCOL_ERROR)
            # paho holds its callback lock while calling on_message and closing the socket takes
            # it again: the socket is closed on the next turn of the loop.
            self._loop.call_soon(self._force_close)
            return
        try:
            self._on_message(InboundPublish(topic, bytes(message.payload), message.qos, message.mid))
        except Exception:
            _log.exception("message handler failed for topic %r", topic)

    def _create_socket(self) -> Any:
        # paho leaves the socket open when the TLS or WebSocket handshake fails (a ResourceWarning
        # and a descriptor per refused connect); close it here.
        try:
            return self._paho_create_socket()
        except BaseException:
            if self._tls_socket is not None:
                self._tls_socket.close()
            raise

    def _wrap_tls(self, tcp_socket: socket.socket) -> ssl.SSLSocket:
        # paho's own wrapper with the socket remembered, so that a failed handshake can close it.
        # The context checks the host name (create_default_context does; a caller's context that
        # turns it off is its own choice).
        parameters = self._parameters
        # Ragged EOFs are not suppressed: a reset or a close without close_notify then raises from
        # recv (and the loss says which) instead of reading as an orderly end of stream.
        tls_socket = parameters.ssl_context.wrap_socket(
            tcp_socket, server_hostname=parameters.host, do_handshake_on_connect=False, suppress_ragged_eofs=False
        )
        self._tls_socket = tls_socket
        tls_socket.settimeout(parameters.connect_timeout)
        tls_socket.do_handshake()
        return tls_socket

    def _sock_recv(self, bufsize: int) -> bytes:
        try:
            data = self._paho_sock_recv(bufsize)
        except BlockingIOError:
            raise
        except Exception as exc:
            self._read_end = exc
            raise
        if not data:
            self._read_eof = True
        return data

    def _handle_pingresp(self) -> Any:
        self._session.last_received = self._loop.time()
        return self._paho_handle_pingresp()

    def _handle_connack(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, *args: Any) -> None:
        try:
            if self._aiomqtt_on_connect is not None:
                self._aiomqtt_on_connect(client, userdata, flags, reason_code, *args)
        finally:
            # paho may report one CONNACK twice (aiomqtt guards against it too): the first counts.
            if self._session.state is SessionState.CONNECTING:
                code = 0 if reason_code == 0 else _connack_return_code(reason_code)
                outcome = self._session.connack_received(code, bool(getattr(flags, "session_present", False)))
                if isinstance(outcome, ConnectionRefused):
                    self._refusal = outcome

    def _handle_puback(self, client: paho.Client, userdata: Any, mid: int, *args: Any) -> None:
        self._session.last_received = self._loop.time()
        future = self._session.puback_received(mid)
        if future is not None and not future.done():
            future.set_result(None)

    def _handle_disconnect(self, client: paho.Client, userdata: Any, *args: Any) -> None:
        try:
            if self._aiomqtt_on_disconnect is not None:
                self._aiomqtt_on_disconnect(client, userdata, *args)
        finally:
            # paho 2 (callback API 2) passes (flags, reason code, properties); its keep-alive check
            # closes the socket with "Keep alive timeout".
            if any(str(arg) == "Keep alive timeout" for arg in args):
                self._mark_lost("keep-alive timeout: no PINGRESP in time", None, LossReason.KEEPALIVE_TIMEOUT)
            elif self._read_end is not None or self._read_eof:
                loss, reason = describe_loss(self._read_end)
                self._mark_lost(reason, self._read_end, loss)
            else:
                self._mark_lost("the connection was lost", None, LossReason.RESET)

    def _aiomqtt_disconnected(self, future: asyncio.Future[None]) -> None:
        # aiomqtt reports the drop through this future; nobody else awaits it, so it is read here
        # (otherwise asyncio logs "Future exception was never retrieved").
        if not future.cancelled():
            future.exception()
        self._mark_lost("the connection was lost")

    def _handle_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho has packets to send. The first packet of an event-loop turn is written at once (a
        # lone request waits for nothing); the ones queued after it in the same turn are written
        # together by one flush on the next turn. The socket is watched for writability only
        # while the kernel buffer is full.
        if threading.get_ident() != self._loop_thread:  # paho's CONNECT, from aiomqtt's worker thread
            self._loop.call_soon_threadsafe(self._schedule_flush)
        elif not self._flush_scheduled:
            self._schedule_flush()
            self._write()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._write()
        sock = self._paho.socket()
        if sock is not None and self._writer_fd is None and self._paho.want_write():
            self._writer_fd = sock.fileno()
            self._loop.add_writer(self._writer_fd, self._write)

    def _write(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as exc:
            loss, reason = describe_loss(exc)
            self._mark_lost(f"writing failed: {reason}", exc, loss)
            self._force_close()

    def _handle_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._writer_fd is not None:
            self._loop.remove_writer(self._writer_fd)
            self._writer_fd = None

    def _mark_lost(self, reason: str, cause: BaseException | None = None, loss: LossReason | None = None) -> None:
        fail_waiters((self.lost, *self._session.connection_lost()), reason, cause, loss=loss)

    def _force_close(self) -> None:
        # paho's own close runs aiomqtt's socket-close hook, which unregisters the socket from the
        # event loop and stops aiomqtt's keep-alive task.
        if self._paho.socket() is not None:
            self._paho._sock_close()
