"""Helpers for the emulator tests: SAS passwords, aiomqtt clients and a byte-level MQTT client."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiomqtt
import anyio
import anyio.abc

from aioiothub.emulator import Emulator, Identity
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.mqtt import (
    ClientBoundPacket,
    ConnAck,
    MqttClientCodec,
    Publish,
    SubAck,
    Will,
    encode_connect,
    encode_puback,
    encode_subscribe,
)
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token

#: How long a test waits for something the emulator should do at once.
STEP = 5.0


def sas_password(hub: Emulator, identity: Identity, *, ttl: float = 3600, key: str | None = None) -> str:
    """A SAS token for ``identity`` signed with its primary key (or ``key``), valid for ``ttl`` seconds."""
    resource = device_resource_uri(hub.hostname, identity.device_id, identity.module_id)
    signing_key = key if key is not None else identity.primary_key
    assert signing_key is not None
    return generate_sas_token(resource, signing_key, int(time.time() + ttl))


def mqtt_client(
    hub: Emulator,
    identity: Identity,
    *,
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    **options: Any,
) -> aiomqtt.Client:
    """An aiomqtt client for ``identity`` over TLS (SAS unless the identity is X.509)."""
    if password is None and identity.authentication == "sas":
        password = sas_password(hub, identity)
    options.setdefault("clean_session", False)
    return aiomqtt.Client(
        "localhost",
        hub.port,
        identifier=client_id(identity.device_id, identity.module_id),
        username=username(hub.hostname, identity.device_id, identity.module_id),
        password=password,
        tls_context=tls_context or hub.client_ssl_context(),
        protocol=aiomqtt.ProtocolVersion.V311,
        **options,
    )


def x509_context(hub: Emulator, identity: Identity, directory: Any) -> ssl.SSLContext:
    """A client TLS context that presents the identity's certificate."""
    context = hub.client_ssl_context()
    cert_file, key_file = identity.write_certificate_files(directory)
    context.load_cert_chain(cert_file, key_file)
    return context


class RawClient:
    """A byte-level MQTT client over TLS, for tests that need to send exactly what they want."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.codec = MqttClientCodec()
        self._pending: list[ClientBoundPacket] = []

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def receive(self, seconds: float = STEP) -> ClientBoundPacket:
        """The next packet from the hub; raises ``anyio.EndOfStream`` when the hub closed."""
        with anyio.fail_after(seconds):
            while not self._pending:
                try:
                    data = await self.stream.receive()
                except anyio.BrokenResourceError:
                    raise anyio.EndOfStream from None
                self._pending.extend(self.codec.feed(data))
        return self._pending.pop(0)

    async def expect_closed(self, seconds: float = STEP) -> list[ClientBoundPacket]:
        """Read until the hub closes the connection; returns what arrived before."""
        packets: list[ClientBoundPacket] = []
        with anyio.fail_after(seconds):
            while True:
                try:
                    packets.append(await self.receive(seconds))
                except anyio.EndOfStream:
                    return packets

    async def connect(
        self,
        client: str,
        user: str | None,
        password: str | bytes | None,
        *,
        keepalive: int = 60,
        clean_session: bool = True,
        will: Will | None = None,
    ) -> ConnAck:
        await self.send(encode_connect(client, user, password, keepalive, clean_session, will))
        packet = await self.receive()
        assert isinstance(packet, ConnAck), packet
        return packet

    async def subscribe(self, packet_id: int, filters: Sequence[tuple[str, int]]) -> SubAck:
        await self.send(encode_subscribe(packet_id, filters))
        packet = await self.receive()
        assert isinstance(packet, SubAck), packet
        return packet

    async def next_publish(self, seconds: float = STEP) -> Publish:
        packet = await self.receive(seconds)
        assert isinstance(packet, Publish), packet
        return packet

    async def acknowledge(self, packet: Publish) -> None:
        assert packet.packet_id is not None
        await self.send(encode_puback(packet.packet_id))


@contextlib.asynccontextmanager
async def raw_connection(hub: Emulator, *, tls_context: ssl.SSLContext | None = None) -> AsyncIterator[RawClient]:
    """Open a TLS connection to the hub without sending anything yet."""
    stream = await anyio.connect_tcp(
        "127.0.0.1", hub.port, tls=True, ssl_context=tls_context or hub.client_ssl_context(), tls_hostname="localhost"
    )
    try:
        yield RawClient(stream)
    finally:
        # The hub may still be sending when a test hangs up; that is no error of the test's. A hub that
        # never answers the close_notify must not hang the test either.
        with contextlib.suppress(ssl.SSLError, anyio.BrokenResourceError, OSError), anyio.move_on_after(STEP):
            await stream.aclose()
        await anyio.aclose_forcefully(stream)


@contextlib.asynccontextmanager
async def raw_client(
    hub: Emulator,
    identity: Identity,
    *,
    keepalive: int = 60,
    clean_session: bool = True,
    will: Will | None = None,
    password: str | None = None,
) -> AsyncIterator[RawClient]:
    """A raw client that has connected (CONNACK 0 asserted) as ``identity`` with a SAS token."""
    async with raw_connection(hub) as client:
        ack = await client.connect(
            client_id(identity.device_id, identity.module_id),
            username(hub.hostname, identity.device_id, identity.module_id),
            password if password is not None else sas_password(hub, identity),
            keepalive=keepalive,
            clean_session=clean_session,
            will=will,
        )
        assert ack.return_code == 0, ack
        yield client
