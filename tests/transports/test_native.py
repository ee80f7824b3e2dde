"""The native transport against the emulator over real sockets: TLS, WebSocket, proxy, X.509, failures."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aioiothub import AuthenticationError, ConnectError, ConnectionLostError, ProxyOptions
from aioiothub.emulator import Emulator
from aioiothub.protocol import topics
from aioiothub.protocol.connect import CONNACK_SERVER_UNAVAILABLE
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token
from aioiothub.transports.base import InboundPublish
from aioiothub.transports.native import NativeConnection
from tests.proxy_helpers import ConnectProxy, serve_proxy
from tests.transports.transport_helpers import STEP, hub_parameters

pytestmark = pytest.mark.anyio


class Inbox:
    """Collects inbound PUBLISHes and lets a test wait for them."""

    def __init__(self) -> None:
        self.messages: list[InboundPublish] = []
        self._arrived = asyncio.Event()

    def __call__(self, message: InboundPublish) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def wait_for(self, count: int) -> list[InboundPublish]:
        with anyio.fail_after(STEP):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages


def telemetry(device_id: str) -> str:
    return topics.telemetry_topic(device_id, None, {})


# --- the happy paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("websockets", [False, True], ids=["tls", "websocket"])
async def test_publishes_are_acknowledged_and_stored(hub: Emulator, websockets: bool) -> None:
    identity = hub.add_device(f"pub-{websockets}")
    port = hub.websocket_port if websockets else hub.port
    parameters = hub_parameters(hub, identity, websockets=websockets, port=port)
    async with NativeConnection(parameters, Inbox()) as connection:
        assert connection.connected
        futures = [connection.publish(telemetry(identity.device_id), f"m{i}".encode(), 1) for i in range(300)]
        quick = connection.publish(telemetry(identity.device_id), b"qos0", 0)
        assert quick.done()
        with anyio.fail_after(STEP):
            await asyncio.gather(*futures)
        await connection.publish(telemetry(identity.device_id), b"barrier", 1)
    assert not connection.connected
    bodies = [record.body for record in hub.telemetry(identity.device_id)]
    assert bodies == [f"m{i}".encode() for i in range(300)] + [b"qos0", b"barrier"]
    await hub.wait_disconnected(identity.device_id, timeout=STEP)


async def test_subscribe_returns_granted_qos_and_twin_answers_arrive(hub: Emulator) -> None:
    identity = hub.add_device("twin-reader")
    inbox = Inbox()
    async with NativeConnection(hub_parameters(hub, identity), inbox) as connection:
        granted = await connection.subscribe([(topics.TWIN_RESPONSE_SUBSCRIPTION, 0), (topics.METHODS_SUBSCRIPTION, 1)])
        assert granted == [0, 1]
        await connection.publish(topics.twin_get_topic("7"), b"", 1)
        (answer,) = await inbox.wait_for(1)
        assert answer.topic.startswith("$iothub/twin/res/200/?$rid=7")
        assert answer.qos == 0


async def test_cloud_message_is_completed_only_when_acknowledged(hub: Emulator) -> None:
    identity = hub.add_device("manual-ack")
    device_id = identity.device_id
    inbox = Inbox()
    async with NativeConnection(hub_parameters(hub, identity), inbox) as connection:
        await connection.subscribe([(topics.c2d_subscription(device_id), 1)])
        await hub.send_c2d(device_id, b"hello")
        (message,) = await inbox.wait_for(1)
        assert (message.payload, message.qos) == (b"hello", 1)
        # The hub handles a connection's packets in order: once a later publish is acknowledged,
        # it has seen everything sent before it, and there was no PUBACK for the message among them.
        await connection.publish(telemetry(device_id), b"barrier", 1)
        assert hub.c2d_queue_length(device_id) == 1
        connection.acknowledge(message)
        await connection.publish(telemetry(device_id), b"barrier", 1)
        assert hub.c2d_queue_length(device_id) == 0


async def test_x509_client_certificate(hub: Emulator, tmp_path: Path) -> None:
    identity = hub.add_device("x509-native", authentication="x509")
    certificate_file, key_file = identity.write_certificate_files(tmp_path)
    context = hub.client_ssl_context()
    context.load_cert_chain(certificate_file, key_file)
    parameters = hub_parameters(hub, identity, ssl_context=context, password=None)
    async with NativeConnection(parameters, Inbox()) as connection:
        await connection.publish(telemetry(identity.device_id), b"signed", 1)
    assert [record.body for record in hub.telemetry(identity.device_id)] == [b"signed"]


async def test_will_is_published_when_the_connection_drops(hub: Emulator) -> None:
    from aioiothub.transports.base import WillMessage

    identity = hub.add_device("will-native")
    will = WillMessage(telemetry(identity.device_id), b"gone")
    async with NativeConnection(hub_parameters(hub, identity, will=will), Inbox()) as connection:
        connection.abort("the test drops it")
    records = await hub.wait_for_telemetry(1, device_id=identity.device_id, timeout=STEP)
    assert [record.body for record in records] == [b"gone"]


# --- refusals and failures while connecting ------------------------------------------------------------


async def test_wrong_key_is_an_authentication_error(hub: Emulator) -> None:
    identity = hub.add_device("wrong-key")
    resource = device_resource_uri(hub.hostname, identity.device_id)
    forged = generate_sas_token(resource, base64.b64encode(b"k" * 32).decode(), int(time.time()) + 3600)
    connection = NativeConnection(hub_parameters(hub, identity, password=forged), Inbox())
    with pytest.raises(AuthenticationError) as caught:
        async with connection:
            pass
    assert caught.value.return_code == 5
    assert connection.lost.done()
    assert not connection.connected


async def test_refused_connack_is_a_connect_error_with_its_return_code(hub: Emulator) -> None:
    identity = hub.add_device("refused")
    hub.refuse_connects(1, return_code=CONNACK_SERVER_UNAVAILABLE)
    with pytest.raises(ConnectError) as caught:
        async with NativeConnection(hub_parameters(hub, identity), Inbox()):
            pass
    assert not isinstance(caught.value, AuthenticationError)
    assert caught.value.return_code == CONNACK_SERVER_UNAVAILABLE
    async with NativeConnection(hub_parameters(hub, identity), Inbox()) as connection:
        assert connection.connected


async def test_untrusted_server_certificate_is_a_connect_error(hub: Emulator) -> None:
    import ssl

    identity = hub.add_device("untrusted")
    parameters = hub_parameters(hub, identity, ssl_context=ssl.create_default_context())
    with pytest.raises(ConnectError, match="TLS handshake with localhost failed"):
        async with NativeConnection(parameters, Inbox()):
            pass


async def test_nothing_listening_is_a_connect_error(hub: Emulator) -> None:
    identity = hub.add_device("no-listener")
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(ConnectError, match=f"could not connect to 127.0.0.1:{port}"):
            async with NativeConnection(hub_parameters(hub, identity, host="127.0.0.1", port=port), Inbox()):
                pass


async def test_a_transport_is_entered_once(hub: Emulator) -> None:
    identity = hub.add_device("once")
    connection = NativeConnection(hub_parameters(hub, identity), Inbox())
    async with connection:
        pass
    with pytest.raises(RuntimeError, match="at most once"):
        async with connection:
            pass


# --- drops ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("websockets", [False, True], ids=["tls", "websocket"])
async def test_drop_fails_publishes_in_flight_with_connection_lost_error(hub: Emulator, websockets: bool) -> None:
    identity = hub.add_device(f"dropped-{websockets}")
    port = hub.websocket_port if websockets else hub.port
    parameters = hub_parameters(hub, identity, websockets=websockets, port=port)
    async with NativeConnection(parameters, Inbox()) as connection:
        hub.delay_pubacks(30)
        try:
            futures = [connection.publish(telemetry(identity.device_id), b"x", 1) for _ in range(20)]
            await hub.wait_for_telemetry(20, device_id=identity.device_id, timeout=STEP)
            assert hub.drop_connection(identity.device_id)
            with anyio.fail_after(STEP):
                await asyncio.wait((connection.lost,))
        finally:
            hub.delay_pubacks(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(result, ConnectionLostError) for result in results), results
        assert isinstance(connection.lost.exception(), ConnectionLostError)
        assert not connection.connected
        with pytest.raises(ConnectionLostError):
            connection.publish(telemetry(identity.device_id), b"late", 1)
        with pytest.raises(ConnectionLostError):
            await connection.subscribe([(topics.METHODS_SUBSCRIPTION, 1)])
        connection.acknowledge(InboundPublish("t", b"", 1, 1))  # does nothing once the connection is gone
        connection.ping()


async def test_keepalive_pings_an_idle_connection(hub: Emulator) -> None:
    # The emulator closes a connection silent for 1.5 x keep-alive; only PINGRESPs arrive here.
    identity = hub.add_device("idle")
    async with NativeConnection(hub_parameters(hub, identity, keepalive=1), Inbox()) as connection:
        connected_at = connection.last_received
        with anyio.fail_after(STEP):
            while connection.last_received < connected_at + 2:
                await asyncio.wait((connection.lost,), timeout=0.1)
                assert connection.connected, connection.lost.exception()


# --- cancellation and name resolution -------------------------------------------------------------------


async def test_host_names_are_resolved_off_the_event_loop(hub: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = hub.add_device("resolved")
    resolve = socket.getaddrinfo
    loop_answered = threading.Event()
    resolved_on: list[int] = []

    def slow_resolver(*args: object, **kwargs: object) -> object:
        # Blocks until the event loop has run a task; on the loop's own thread this could never end.
        resolved_on.append(threading.get_ident())
        assert loop_answered.wait(STEP), "the event loop was blocked while resolving"
        return resolve(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)

    async def answer() -> None:
        loop_answered.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(answer)
        async with NativeConnection(hub_parameters(hub, identity), Inbox()) as connection:
            assert connection.connected
    assert resolved_on
    assert threading.get_ident() not in resolved_on


# --- the HTTP CONNECT proxy -------------------------------------------------------------------------------


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ConnectProxy, int]]:
    recorder = ConnectProxy(require="Basic " + base64.b64encode(b"user:secret").decode())
    async for port in serve_proxy(recorder):
        yield recorder, port


@pytest.mark.parametrize("websockets", [False, True], ids=["tls", "websocket"])
async def test_reaches_the_hub_through_an_http_proxy(
    hub: Emulator, proxy: tuple[ConnectProxy, int], websockets: bool
) -> None:
    recorder, proxy_port = proxy
    identity = hub.add_device(f"proxied-{websockets}")
    port = hub.websocket_port if websockets else hub.port
    options = ProxyOptions("http", "127.0.0.1", proxy_port, username="user", password="secret")
    parameters = hub_parameters(hub, identity, proxy=options, websockets=websockets, port=port)
    async with NativeConnection(parameters, Inbox()) as connection:
        await connection.publish(telemetry(identity.device_id), b"via proxy", 1)
    assert [record.body for record in hub.telemetry(identity.device_id)] == [b"via proxy"]
    assert recorder.heads[-1].startswith(f"CONNECT localhost:{port} HTTP/1.1\r\n")


async def test_proxy_refusal_is_a_connect_error(hub: Emulator, proxy: tuple[ConnectProxy, int]) -> None:
    _, proxy_port = proxy
    identity = hub.add_device("proxy-refused")
    options = ProxyOptions("http", "127.0.0.1", proxy_port, username="user", password="wrong")
    with pytest.raises(ConnectError, match=r"the proxy refused CONNECT localhost:\d+: 407"):
        async with NativeConnection(hub_parameters(hub, identity, proxy=options), Inbox()):
            pass
