"""Helpers for the transport tests: connect parameters for the emulator, and a scripted raw MQTT server.

:class:`RawServer` is a TLS listener on loopback whose connections are handed to the test as
:class:`RawPeer` objects: the test reads the client's packets through the server-role codec and
writes whatever bytes it likes back, malformed ones included.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from aioiothub.emulator import Emulator, Identity
from aioiothub.emulator.certs import CertificateAuthority, client_ssl_context, server_ssl_context
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.mqtt import MqttServerCodec, Packet
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token
from aioiothub.transports.base import ConnectParameters

#: Seconds to wait for something that should happen at once.
STEP = 5.0


def hub_parameters(hub: Emulator, identity: Identity, **changes: Any) -> ConnectParameters:
    """Parameters for ``identity`` on the emulator's TLS port, with a fresh SAS token."""
    password: str | None = None
    if identity.primary_key is not None:
        resource = device_resource_uri(hub.hostname, identity.device_id, identity.module_id)
        password = generate_sas_token(resource, identity.primary_key, int(time.time()) + 3600)
    hub_options: dict[str, Any] = {
        "port": hub.port,
        "client_id": client_id(identity.device_id, identity.module_id),
        "username": username(hub.hostname, identity.device_id, identity.module_id),
        "password": password,
        "ssl_context": hub.client_ssl_context(),
    }
    return offline_parameters(**{**hub_options, **changes})


def offline_parameters(**changes: Any) -> ConnectParameters:
    """Parameters for device ``dev1`` of ``localhost:8883``, for a connection built but not connected
    (``changes`` replace any field)."""
    options: dict[str, Any] = {
        "host": "localhost",
        "port": 8883,
        "client_id": "dev1",
        "username": "localhost/dev1/?api-version=2021-04-12",
        "password": "token",
        "ssl_context": ssl.create_default_context(),
        "keepalive": 60,
        "clean_session": False,
        "websockets": False,
        "max_in_flight": 100,
        "connect_timeout": STEP,
    }
    options.update(changes)
    return ConnectParameters(**options)


class RawPeer:
    """The server end of one connection to a :class:`RawServer`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._codec = MqttServerCodec()
        self._packets: list[Packet] = []

    async def packet(self) -> Packet:
        """The next packet the client sent (within :data:`STEP` seconds)."""
        with anyio.fail_after(STEP):
            while not self._packets:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("the client closed the connection")
                self._packets.extend(self._codec.feed(data))
        return self._packets.pop(0)

    async def send(self, data: bytes) -> None:
        """Write raw bytes to the client."""
        self.writer.write(data)
        await self.writer.drain()

    async def closed_by_client(self) -> bool:
        """Wait (within :data:`STEP` seconds) until the client has closed the connection.

        Whatever the client sent meanwhile is discarded.
        """
        with anyio.fail_after(STEP):
            while True:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, ssl.SSLError):
                    return True
                if not data:
                    return True


class RawServer:
    """A TLS server on 127.0.0.1 for ``localhost``; each accepted connection is queued as a :class:`RawPeer`."""

    def __init__(self) -> None:
        authority = CertificateAuthority.generate()
        self.client_context = client_ssl_context(authority.certificate_pem)
        self._server_context = server_ssl_context(*authority.issue_server_certificate(["localhost", "127.0.0.1"]))
        self._server: asyncio.Server | None = None
        self._peers: asyncio.Queue[RawPeer] = asyncio.Queue()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self._peers.put(RawPeer(reader, writer))

    async def peer(self) -> RawPeer:
        """The next connection (within :data:`STEP` seconds)."""
        with anyio.fail_after(STEP):
            return await self._peers.get()

    def parameters(self, **changes: Any) -> ConnectParameters:
        """Connect parameters pointing at this server."""
        return offline_parameters(**{"port": self.port, "ssl_context": self.client_context, **changes})


@asynccontextmanager
async def raw_server(*, tls: bool = True) -> AsyncIterator[RawServer]:
    """A running :class:`RawServer` (``tls=False``: plain TCP, for a peer that never answers TLS)."""
    server = RawServer()
    context = server._server_context if tls else None
    server._server = await asyncio.start_server(server._accept, "127.0.0.1", 0, ssl=context)
    server.port = server._server.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        server._server.close()
        for writer in server._writers:
            writer.transport.abort()
        await server._server.wait_closed()
