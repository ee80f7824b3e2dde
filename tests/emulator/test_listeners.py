from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import aiomqtt
import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSAttribute
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from aioiothub.emulator import listeners
from aioiothub.emulator.certs import (
    CertificateAuthority,
    certificate_thumbprints,
    client_ssl_context,
    generate_self_signed_certificate,
    server_ssl_context,
    trust_client_certificate,
)
from aioiothub.emulator.listeners import PeerInfo, WebSocketByteStream, serve_tls, serve_websocket
from aioiothub.protocol.mqtt import (
    ConnAck,
    Connect,
    Disconnect,
    MqttClientCodec,
    MqttServerCodec,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Subscribe,
    encode_connack,
    encode_connect,
    encode_pingreq,
    encode_pingresp,
    encode_puback,
    encode_publish,
    encode_suback,
)

pytestmark = pytest.mark.anyio

Serve = Any  # serve_tls or serve_websocket
LISTENER_LOGGER = "aioiothub.emulator.listeners"


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture
def server_context(authority: CertificateAuthority) -> ssl.SSLContext:
    return server_ssl_context(*authority.issue_server_certificate(["localhost", "127.0.0.1", "::1"]))


@pytest.fixture
def client_context(authority: CertificateAuthority) -> ssl.SSLContext:
    return client_ssl_context(authority.certificate_pem)


@asynccontextmanager
async def listening(serve: Serve, handler: listeners.ConnectionHandler, context: ssl.SSLContext) -> AsyncIterator[int]:
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(partial(serve, handler, host="127.0.0.1", port=0, ssl_context=context))
        yield port
        task_group.cancel_scope.cancel()


async def connect(port: int, context: ssl.SSLContext, hostname: str = "localhost") -> anyio.abc.ByteStream:
    return await anyio.connect_tcp(
        "127.0.0.1", port, ssl_context=context, tls_hostname=hostname, tls_standard_compatible=False
    )


class Echo:
    """Echoes everything back and remembers who connected."""

    def __init__(self) -> None:
        self.peers: list[PeerInfo] = []

    async def __call__(self, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        self.peers.append(peer)
        async for chunk in stream:
            await stream.send(chunk)


async def read_until_closed(stream: anyio.abc.ByteStream) -> NoReturn:
    """Read until the stream ends; the exception that ended it propagates."""
    with anyio.fail_after(5):
        while True:
            await stream.receive()


async def echo_round_trip(stream: anyio.abc.ByteStream, data: bytes) -> bytes:
    await stream.send(data)
    received = b""
    while len(received) < len(data):
        received += await stream.receive()
    return received


def write_pair(directory: Path, cert_pem: bytes, key_pem: bytes) -> tuple[str, str]:
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    return str(cert_file), str(key_file)


def der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


# --- TLS --------------------------------------------------------------------------------------------


async def test_tls_echo_and_peer_info(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    echo = Echo()
    async with listening(serve_tls, echo, server_context) as port:
        assert port > 0
        for hostname in ("localhost", "127.0.0.1"):
            async with await connect(port, client_context, hostname) as stream:
                assert await echo_round_trip(stream, b"hello " + hostname.encode()) == b"hello " + hostname.encode()
    assert [peer.transport for peer in echo.peers] == ["tls", "tls"]
    assert all(peer.remote_address.startswith("127.0.0.1:") for peer in echo.peers)
    assert all(peer.client_certificate_der is None for peer in echo.peers)


async def test_hostname_is_checked(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    echo = Echo()
    async with listening(serve_tls, echo, server_context) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(port, client_context, "not-the-hub.example")
        # The failed handshake affected only that connection.
        async with await connect(port, client_context) as stream:
            assert await echo_round_trip(stream, b"still serving") == b"still serving"
    assert len(echo.peers) == 1


async def test_large_transfer_with_slow_readers_on_both_sides(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # 8 MiB read in small bites at both ends, so that both directions have to stop and wait.
    data = bytes(range(256)) * 32 * 1024

    async def slow_echo(stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        while True:
            try:
                chunk = await stream.receive(4096)
            except anyio.EndOfStream:
                return
            await stream.send(chunk)

    async with listening(serve_tls, slow_echo, server_context) as port, await connect(port, client_context) as stream:
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(data):
                received.extend(await stream.receive(1024))

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(read_all)
            for offset in range(0, len(data), 100_000):
                await stream.send(data[offset : offset + 100_000])
        assert bytes(received) == data


async def test_stream_is_closed_when_the_handler_returns(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def say_bye(stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        await stream.send(b"bye")

    async with listening(serve_tls, say_bye, server_context) as port, await connect(port, client_context) as stream:
        assert await stream.receive() == b"bye"
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()


async def test_handler_error_ends_only_its_connection(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    async def picky(stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        data = await stream.receive()
        if data == b"crash":
            raise RuntimeError("handler bug")
        await stream.send(data)

    caplog.set_level(logging.DEBUG, LISTENER_LOGGER)
    async with listening(serve_tls, picky, server_context) as port:
        async with await connect(port, client_context) as stream:
            await stream.send(b"crash")
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()
        async with await connect(port, client_context) as stream:
            assert await echo_round_trip(stream, b"fine") == b"fine"
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)


async def test_client_reset_is_logged_at_debug(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    ended = anyio.Event()
    outcomes: list[BaseException] = []

    async def reader(stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        try:
            async for chunk in stream:
                await stream.send(chunk)
        except Exception as exc:
            outcomes.append(exc)
            raise
        finally:
            ended.set()

    caplog.set_level(logging.DEBUG, LISTENER_LOGGER)
    async with listening(serve_tls, reader, server_context) as port:
        stream = await connect(port, client_context)
        assert await echo_round_trip(stream, b"x") == b"x"
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        # Linger 0 makes close() send a TCP reset instead of a FIN.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await anyio.aclose_forcefully(stream)
        with anyio.fail_after(5):
            await ended.wait()
        async with await connect(port, client_context) as stream:
            assert await echo_round_trip(stream, b"after reset") == b"after reset"
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], anyio.BrokenResourceError)
    assert any("ended" in record.message and record.levelno == logging.DEBUG for record in caplog.records)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_handshake_timeout_drops_the_connection(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listeners.tls, "HANDSHAKE_TIMEOUT", 0.2)
    caplog.set_level(logging.DEBUG, LISTENER_LOGGER)
    echo = Echo()
    async with listening(serve_tls, echo, server_context) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as silent:
            with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await silent.receive()
        async with await connect(port, client_context) as stream:
            assert await echo_round_trip(stream, b"ok") == b"ok"
    assert len(echo.peers) == 1
    assert any("TLS handshake" in record.message for record in caplog.records)


async def test_connections_still_in_their_handshake_are_closed_at_shutdown(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    echo = Echo()
    async with listening(serve_tls, echo, server_context) as port:
        silent = await anyio.connect_tcp("127.0.0.1", port)  # never starts its handshake
        async with await connect(port, client_context) as stream:  # the listener is serving it
            assert await echo_round_trip(stream, b"up") == b"up"
    # The listener has stopped, long before the handshake timeout: the silent one is hung up on.
    async with silent:
        with anyio.fail_after(listeners.tls.HANDSHAKE_TIMEOUT / 2), pytest.raises(
            (anyio.EndOfStream, anyio.BrokenResourceError)
        ):
            await silent.receive()


async def test_client_certificate_trusted_later_on_the_same_context(
    server_context: ssl.SSLContext,
    authority: CertificateAuthority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device_cert, device_key = generate_self_signed_certificate("x509-device")
    with_certificate = client_ssl_context(authority.certificate_pem)
    with_certificate.load_cert_chain(*write_pair(tmp_path, device_cert, device_key))
    without_certificate = client_ssl_context(authority.certificate_pem)
    caplog.set_level(logging.DEBUG, LISTENER_LOGGER)
    echo = Echo()
    async with listening(serve_tls, echo, server_context) as port:
        # Not trusted yet: the server refuses the handshake. Under TLS 1.3 the client learns it only
        # when it next reads, so either place counts.
        with pytest.raises((ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream)):  # noqa: PT012
            async with await connect(port, with_certificate) as stream:
                await stream.send(b"hello")
                await stream.receive()
        assert echo.peers == []
        assert any("TLS handshake" in record.message for record in caplog.records)

        async with await connect(port, without_certificate) as stream:
            assert await echo_round_trip(stream, b"sas device") == b"sas device"

        trust_client_certificate(server_context, device_cert)
        async with await connect(port, with_certificate) as stream:
            assert await echo_round_trip(stream, b"x509 device") == b"x509 device"
    assert [peer.client_certificate_der for peer in echo.peers] == [None, der(device_cert)]
    peer_certificate = echo.peers[1].client_certificate_der
    assert peer_certificate is not None
    assert certificate_thumbprints(peer_certificate) == certificate_thumbprints(device_cert)


async def test_client_certificate_issued_by_a_trusted_ca(
    server_context: ssl.SSLContext, authority: CertificateAuthority, tmp_path: Path
) -> None:
    device_ca = CertificateAuthority.generate("device CA")
    device_cert, device_key = device_ca.issue_client_certificate("ca-device")
    context = client_ssl_context(authority.certificate_pem)
    context.load_cert_chain(*write_pair(tmp_path, device_cert, device_key))
    trust_client_certificate(server_context, device_ca.certificate_pem)
    echo = Echo()
    async with listening(serve_tls, echo, server_context) as port, await connect(port, context) as stream:
        assert await echo_round_trip(stream, b"hi") == b"hi"
    assert [peer.client_certificate_der for peer in echo.peers] == [der(device_cert)]


async def test_ipv6_listener(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    echo = Echo()
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(partial(serve_tls, echo, host="::1", port=0, ssl_context=server_context))
        async with await anyio.connect_tcp(
            "::1", port, ssl_context=client_context, tls_hostname="::1", tls_standard_compatible=False
        ) as stream:
            assert await echo_round_trip(stream, b"six") == b"six"
        task_group.cancel_scope.cancel()
    assert echo.peers[0].remote_address.startswith("[::1]:")


async def test_every_address_of_a_name_shares_one_free_port(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def both_loopbacks(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        assert host == "dual-stack.test"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", both_loopbacks)
    echo = Echo()
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(
            partial(serve_tls, echo, host="dual-stack.test", port=0, ssl_context=server_context)
        )
        for address in ("127.0.0.1", "::1"):
            async with await anyio.connect_tcp(
                address, port, ssl_context=client_context, tls_hostname="localhost", tls_standard_compatible=False
            ) as stream:
                assert await echo_round_trip(stream, address.encode()) == address.encode()
        task_group.cancel_scope.cancel()
    assert len(echo.peers) == 2


async def test_port_in_use_is_an_os_error(server_context: ssl.SSLContext) -> None:
    echo = Echo()
    async with listening(serve_tls, echo, server_context) as port:
        with pytest.raises(OSError):  # noqa: PT011
            await serve_tls(echo, host="127.0.0.1", port=port, ssl_context=server_context)


async def test_invalid_port_is_a_value_error(server_context: ssl.SSLContext) -> None:
    with pytest.raises(ValueError, match="port"):
        await serve_tls(Echo(), host="127.0.0.1", port=70000, ssl_context=server_context)


# --- WebSocket ----------------------------------------------------------------------------------------


class MqttResponder:
    """A minimal MQTT server handler: CONNACK, PUBACK, SUBACK, PINGRESP; records what arrived."""

    def __init__(self) -> None:
        self.packets: list[object] = []
        self.peers: list[PeerInfo] = []
        self.outcome = "running"
        self.done = anyio.Event()

    async def __call__(self, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        self.peers.append(peer)
        codec = MqttServerCodec()
        try:
            async for chunk in stream:
                replies = []
                for packet in codec.feed(chunk):
                    self.packets.append(packet)
                    if isinstance(packet, Connect):
                        replies.append(encode_connack(False, 0))
                    elif isinstance(packet, Publish) and packet.packet_id is not None:
                        replies.append(encode_puback(packet.packet_id))
                    elif isinstance(packet, Subscribe):
                        replies.append(encode_suback(packet.packet_id, [min(qos, 1) for _, qos in packet.filters]))
                    elif isinstance(packet, PingReq):
                        replies.append(encode_pingresp())
                    elif isinstance(packet, Disconnect):
                        self.outcome = "disconnect"
                        return
                if replies:
                    await stream.send(b"".join(replies))
            self.outcome = "end of stream"
        except anyio.BrokenResourceError:
            self.outcome = "broken"
        finally:
            self.done.set()


class RawWebSocketClient:
    """A WebSocket client made of wsproto over an anyio TLS stream."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.connection = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(
        cls,
        port: int,
        context: ssl.SSLContext,
        *,
        target: str = "/$iothub/websocket",
        subprotocols: Sequence[str] = ("mqtt",),
    ) -> tuple[RawWebSocketClient, Event]:
        client = cls(await connect(port, context))
        await client.stream.send(
            client.connection.send(Request(host="localhost", target=target, subprotocols=list(subprotocols)))
        )
        return client, await client.next_event()

    async def next_event(self) -> Event:
        while True:
            for event in self.connection.events():
                return event
            self.connection.receive_data(await self.stream.receive())

    async def send(self, event: Event) -> None:
        await self.stream.send(self.connection.send(event))


async def test_websocket_upgrade_echoes_the_subprotocol(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    responder = MqttResponder()
    async with listening(serve_websocket, responder, server_context) as port:
        for offered, chosen in ((["mqtt"], "mqtt"), (["MQTT"], "MQTT"), (["wamp", "MQTT"], "MQTT")):
            client, event = await RawWebSocketClient.open(port, client_context, subprotocols=offered)
            async with client.stream:
                assert isinstance(event, AcceptConnection)
                assert event.subprotocol == chosen
                await client.send(CloseConnection(code=1000))
                assert isinstance(await client.next_event(), CloseConnection)
    assert [peer.transport for peer in responder.peers] == ["websocket"] * 3


async def test_websocket_path_with_query_string_is_accepted(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with listening(serve_websocket, MqttResponder(), server_context) as port:
        client, event = await RawWebSocketClient.open(
            port, client_context, target="/$iothub/websocket?iothub-no-client-cert=true"
        )
        async with client.stream:
            assert isinstance(event, AcceptConnection)


@pytest.mark.parametrize(
    ("target", "subprotocols", "status"),
    [
        ("/", ["mqtt"], 404),
        ("/$iothub/websocket/extra", ["mqtt"], 404),
        ("/$iothub/websocket", [], 400),
        ("/$iothub/websocket", ["mqttv3.1"], 400),
        ("/$iothub/websocket", ["Mqtt"], 400),
    ],
)
async def test_websocket_upgrade_rules(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    target: str,
    subprotocols: list[str],
    status: int,
) -> None:
    responder = MqttResponder()
    async with listening(serve_websocket, responder, server_context) as port:
        client, event = await RawWebSocketClient.open(port, client_context, target=target, subprotocols=subprotocols)
        async with client.stream:
            assert isinstance(event, RejectConnection)
            assert event.status_code == status
            with pytest.raises(anyio.EndOfStream):
                await read_until_closed(client.stream)
    assert responder.peers == []


async def test_plain_http_request_gets_400(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    async with (
        listening(serve_websocket, MqttResponder(), server_context) as port,
        await connect(port, client_context) as stream,
    ):
        await stream.send(b"GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = await stream.receive()
        assert response.startswith(b"HTTP/1.1 400 ")
        with pytest.raises(anyio.EndOfStream):
            await read_until_closed(stream)


async def test_websocket_fragmentation_and_batching(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    responder = MqttResponder()
    publishes = [encode_publish("devices/d/messages/events/", bytes([n]) * 300, 1, n + 1) for n in range(6)]
    async with listening(serve_websocket, responder, server_context) as port:
        client, event = await RawWebSocketClient.open(port, client_context)
        assert isinstance(event, AcceptConnection)
        async with client.stream:
            connect_packet = encode_connect("d", "hub/d/?api-version=2021-04-12", "token")
            # One MQTT packet across three frames of one message...
            await client.send(Message(data=connect_packet[:5], message_finished=False))
            await client.send(Message(data=connect_packet[5:20], message_finished=False))
            await client.send(Message(data=connect_packet[20:], message_finished=True))
            # ...three packets in one message, and one packet spanning two messages.
            await client.send(Message(data=b"".join(publishes[:3]) + publishes[3][:100]))
            await client.send(Message(data=publishes[3][100:]))
            await client.send(Message(data=b"".join(publishes[4:])))
            codec = MqttClientCodec()
            replies: list[object] = []
            while len(replies) < 7:
                event = await client.next_event()
                assert isinstance(event, BytesMessage)
                replies.extend(codec.feed(event.data))
            assert replies[0] == ConnAck(False, 0)
            assert replies[1:] == [PubAck(n + 1) for n in range(6)]
            await client.send(CloseConnection(code=1000))
            assert await client.next_event() == CloseConnection(code=1000, reason="")
            with anyio.fail_after(5):
                await responder.done.wait()
    assert isinstance(responder.packets[0], Connect)
    assert [p.payload for p in responder.packets[1:] if isinstance(p, Publish)] == [bytes([n]) * 300 for n in range(6)]
    assert responder.outcome == "end of stream"


async def test_websocket_ping_is_answered(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    async with listening(serve_websocket, MqttResponder(), server_context) as port:
        client, _ = await RawWebSocketClient.open(port, client_context)
        async with client.stream:
            await client.send(Ping(payload=b"are you there"))
            assert await client.next_event() == Pong(payload=b"are you there")
            await client.send(Message(data=encode_pingreq()))
            event = await client.next_event()
            assert isinstance(event, BytesMessage)
            assert MqttClientCodec().feed(event.data) == [PingResp()]


async def test_websocket_closed_by_the_server(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    async def hang_up(stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        await stream.send(b"last words")

    async with listening(serve_websocket, hang_up, server_context) as port:
        client, _ = await RawWebSocketClient.open(port, client_context)
        async with client.stream:
            assert await client.next_event() == BytesMessage(
                data=b"last words", frame_finished=True, message_finished=True
            )
            assert await client.next_event() == CloseConnection(code=1000, reason="")


async def test_websocket_text_message_closes_with_1003(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    responder = MqttResponder()
    async with listening(serve_websocket, responder, server_context) as port:
        client, _ = await RawWebSocketClient.open(port, client_context)
        async with client.stream:
            await client.send(TextMessage(data="not mqtt"))
            event = await client.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1003
            with anyio.fail_after(5):
                await responder.done.wait()
    assert responder.outcome == "broken"


async def test_websocket_byte_stream_both_roles(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    echo = Echo()
    async with listening(serve_websocket, echo, server_context) as port:
        client, event = await RawWebSocketClient.open(port, client_context)
        assert isinstance(event, AcceptConnection)
        stream = WebSocketByteStream(client.stream, client.connection)
        async with stream:
            assert await echo_round_trip(stream, b"abc" * 50_000) == b"abc" * 50_000
            assert stream.transport_stream is client.stream
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"after close")
    assert echo.peers[0].transport == "websocket"


def test_websocket_byte_stream_needs_an_open_connection() -> None:
    with pytest.raises(ValueError, match="connection must be open"):
        WebSocketByteStream(None, WSConnection(ConnectionType.CLIENT))  # type: ignore[arg-type]


async def test_paho_connects_over_websocket(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    responder = MqttResponder()
    async with listening(serve_websocket, responder, server_context) as port:
        client = aiomqtt.Client(
            "localhost",
            port,
            identifier="paho-device",
            username="hub/paho-device/?api-version=2021-04-12",
            password="SharedAccessSignature sr=x",
            transport="websockets",
            websocket_path="/$iothub/websocket",
            tls_context=client_context,
        )
        async with client:
            await client.subscribe("devices/paho-device/messages/devicebound/#", qos=1)
            await client.publish("devices/paho-device/messages/events/", b"x" * 1000, qos=1)
        with anyio.fail_after(5):
            await responder.done.wait()
    connect_packet = responder.packets[0]
    assert isinstance(connect_packet, Connect)
    assert connect_packet.client_id == "paho-device"
    assert connect_packet.username == "hub/paho-device/?api-version=2021-04-12"
    assert connect_packet.password == b"SharedAccessSignature sr=x"
    assert Publish("devices/paho-device/messages/events/", b"x" * 1000, 1, False, False, 2) in responder.packets
    assert isinstance(responder.packets[-1], Disconnect)
    assert responder.outcome == "disconnect"


# --- the TLS engine and its byte stream, driven through an in-memory client ----------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__({"peername": ("192.0.2.1", 50000)})
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class InMemoryTLS:
    """A server-side _TLSConnection on a fake transport, and a client SSLObject wired to it."""

    def __init__(self, server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
        self.transport = FakeTransport()
        self.established: list[listeners.tls._TLSConnection] = []
        self.connection = listeners.tls._TLSConnection(server_context, self.established.append)
        self.connection.connection_made(self.transport)
        self.client_incoming = ssl.MemoryBIO()
        self.client_outgoing = ssl.MemoryBIO()
        self.client = client_context.wrap_bio(self.client_incoming, self.client_outgoing, server_hostname="localhost")

    def pump(self) -> None:
        while True:
            moved = False
            if self.client_outgoing.pending:
                self.connection.data_received(self.client_outgoing.read())
                moved = True
            if self.transport.written:
                self.client_incoming.write(bytes(self.transport.written))
                self.transport.written.clear()
                moved = True
            with contextlib.suppress(ssl.SSLWantReadError):
                self.client.do_handshake()
            if not moved and not self.client_outgoing.pending:
                return

    def open_stream(self) -> listeners.tls._TLSByteStream:
        self.pump()
        assert self.established == [self.connection]
        return listeners.tls._TLSByteStream(self.connection)

    def client_send(self, data: bytes) -> None:
        self.client.write(data)
        self.pump()

    def client_receive(self) -> bytes:
        """Everything the server sent so far; ``EOFError`` once its close_notify has arrived."""
        self.pump()
        received = b""
        with contextlib.suppress(ssl.SSLWantReadError):
            while True:
                chunk = self.client.read(65536)
                if not chunk:
                    raise EOFError(received)
                received += chunk
        return received


@pytest.fixture
async def tls(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> InMemoryTLS:
    # Async only so that the connection is made inside the running event loop.
    return InMemoryTLS(server_context, client_context)


async def test_engine_round_trip(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    tls.client_send(b"from the client")
    assert await stream.receive() == b"from the client"
    await stream.send(b"from the server")
    assert tls.client_receive() == b"from the server"
    assert stream.extra(anyio.abc.SocketAttribute.remote_address) == ("192.0.2.1", 50000)
    assert stream.extra(TLSAttribute.tls_version) in ("TLSv1.2", "TLSv1.3")
    assert stream.extra(TLSAttribute.peer_certificate_binary) is None


async def test_reading_pauses_above_the_high_water_mark_and_resumes_when_drained(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    tls.client_send(bytes(200 * 1024))
    assert tls.transport.reading
    tls.client_send(bytes(100 * 1024))
    assert not tls.transport.reading
    assert len(await stream.receive(200 * 1024)) == 200 * 1024
    assert not tls.transport.reading  # 100 KiB left is still above the low-water mark
    assert len(await stream.receive(50 * 1024)) == 50 * 1024
    assert tls.transport.reading


async def test_send_waits_while_the_transport_is_paused(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    tls.connection.pause_writing()
    finished = anyio.Event()

    async def send() -> None:
        await stream.send(b"data")
        finished.set()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(send)
        await anyio.wait_all_tasks_blocked()
        assert tls.client_receive() == b"data"
        assert not finished.is_set()
        tls.connection.resume_writing()
        await finished.wait()


async def test_send_wakes_up_when_the_connection_is_lost(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    tls.connection.pause_writing()
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(stream.send, b"data")
        await anyio.wait_all_tasks_blocked()
        tls.connection.connection_lost(ConnectionResetError())
    with pytest.raises(anyio.BrokenResourceError):
        await stream.send(b"more")
    with pytest.raises(anyio.BrokenResourceError):
        await stream.receive()


async def test_receive_returns_buffered_data_before_end_of_stream(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    async with anyio.create_task_group() as task_group:

        async def deliver() -> None:
            await anyio.wait_all_tasks_blocked()
            tls.client.write(b"tail")
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.client.unwrap()
            tls.pump()

        task_group.start_soon(deliver)
        assert await stream.receive() == b"tail"
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()


async def test_tcp_close_without_close_notify_ends_the_stream(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    tls.client_send(b"last")
    tls.connection.eof_received()
    assert await stream.receive() == b"last"
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()


async def test_corrupt_record_breaks_the_stream(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    tls.connection.data_received(b"\x17\x03\x03\x00\x20" + bytes(32))
    assert tls.transport.aborted
    tls.connection.connection_lost(None)
    with pytest.raises(anyio.BrokenResourceError):
        await stream.receive()


async def test_close_sends_close_notify_and_waits_for_the_transport(tls: InMemoryTLS) -> None:
    stream = tls.open_stream()
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(stream.aclose)
        await anyio.wait_all_tasks_blocked()
        assert tls.transport.closed
        with pytest.raises(EOFError):
            tls.client_receive()
        tls.connection.connection_lost(None)
    assert not tls.transport.aborted


async def test_closed_stream_refuses_use_and_aborts_a_silent_peer(
    tls: InMemoryTLS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listeners.tls, "_CLOSE_TIMEOUT", 0.01)
    stream = tls.open_stream()
    await stream.aclose()
    assert tls.transport.closed
    assert tls.transport.aborted  # connection_lost never came
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.send(b"x")
    with pytest.raises(NotImplementedError):
        await stream.send_eof()


async def test_handshake_garbage_is_refused(tls: InMemoryTLS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LISTENER_LOGGER)
    tls.connection.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert tls.transport.closed
    assert tls.established == []
    assert "TLS handshake with 192.0.2.1:50000 failed" in caplog.text


async def test_client_leaving_during_handshake_is_logged(tls: InMemoryTLS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LISTENER_LOGGER)
    tls.connection.eof_received()
    tls.connection.connection_lost(ConnectionResetError())
    assert tls.established == []
    assert caplog.text.count("TLS handshake with 192.0.2.1:50000 failed") == 2


# --- WebSocketByteStream over a local socket pair ------------------------------------------------------


@asynccontextmanager
async def websocket_pair() -> AsyncIterator[tuple[WebSocketByteStream, WebSocketByteStream]]:
    left, right = socket.socketpair()
    client_transport = await anyio.abc.SocketStream.from_socket(left)
    server_transport = await anyio.abc.SocketStream.from_socket(right)
    client_connection = WSConnection(ConnectionType.CLIENT)
    server_connection = WSConnection(ConnectionType.SERVER)
    await client_transport.send(
        client_connection.send(Request(host="localhost", target="/$iothub/websocket", subprotocols=["mqtt"]))
    )
    server_connection.receive_data(await server_transport.receive())
    request = next(server_connection.events())
    assert isinstance(request, Request)
    await server_transport.send(server_connection.send(AcceptConnection(subprotocol="mqtt")))
    client_connection.receive_data(await client_transport.receive())
    assert isinstance(next(client_connection.events()), AcceptConnection)
    client = WebSocketByteStream(client_transport, client_connection)
    server = WebSocketByteStream(server_transport, server_connection)
    async with client, server:
        yield client, server


async def test_websocket_stream_honours_max_bytes() -> None:
    async with websocket_pair() as (client, server):
        await client.send(b"0123456789")
        assert await server.receive(4) == b"0123"
        assert await server.receive(4) == b"4567"
        assert await server.receive() == b"89"


async def test_websocket_stream_after_close() -> None:
    async with websocket_pair() as (client, server):
        await client.aclose()
        await client.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await client.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"x")
        # The server saw the close frame: its stream ends, and it may no longer send.
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await server.send(b"too late")
        with pytest.raises(NotImplementedError):
            await server.send_eof()


async def test_websocket_stream_without_close_frame_is_broken() -> None:
    async with websocket_pair() as (client, server):
        await client.transport_stream.aclose()
        with pytest.raises(anyio.BrokenResourceError):
            await server.receive()
        # Closing after the peer vanished must not raise.
        await server.aclose()


async def test_websocket_stream_extra_attributes() -> None:
    async with websocket_pair() as (_, server):
        assert server.extra(anyio.abc.SocketAttribute.family) == socket.AF_UNIX


async def test_websocket_tls_failure_affects_only_that_connection(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    responder = MqttResponder()
    async with listening(serve_websocket, responder, server_context) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(port, client_context, "not-the-hub.example")
        client, event = await RawWebSocketClient.open(port, client_context)
        async with client.stream:
            assert isinstance(event, AcceptConnection)
    assert len(responder.peers) == 1


@pytest.mark.parametrize("serve", [serve_tls, serve_websocket])
async def test_stopping_the_listener_closes_its_connections(
    serve: Serve, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    handler_cancelled = anyio.Event()

    async def wait_forever(stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            handler_cancelled.set()

    async with anyio.create_task_group() as task_group:
        port = await task_group.start(
            partial(serve, wait_forever, host="127.0.0.1", port=0, ssl_context=server_context)
        )
        # One connection inside the handler, one that completed TLS but has not started the upgrade.
        if serve is serve_websocket:
            busy, event = await RawWebSocketClient.open(port, client_context)
            assert isinstance(event, AcceptConnection)
            busy_stream = busy.stream
        else:
            busy_stream = await connect(port, client_context)
            await busy_stream.send(b"x")
        idle_stream = await connect(port, client_context)
        await anyio.wait_all_tasks_blocked()
        task_group.cancel_scope.cancel()
    assert handler_cancelled.is_set()
    for stream in (busy_stream, idle_stream):
        async with stream:
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await read_until_closed(stream)
