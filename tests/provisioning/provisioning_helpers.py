"""Helpers for the provisioning tests: clients for the emulator's DPS, and a DPS that misbehaves."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.certs import CertificateAuthority, client_ssl_context, server_ssl_context
from aioiothub.emulator.listeners import PeerInfo, serve_tls
from aioiothub.protocol.mqtt import (
    Connect,
    Disconnect,
    MqttServerCodec,
    PingReq,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_connack,
    encode_pingresp,
    encode_puback,
    encode_publish,
    encode_suback,
    encode_unsuback,
)

#: Seconds to wait for something that should happen at once.
STEP = 5.0

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A registration or device id no other test in the session uses."""
    return f"{prefix}-{next(_ids)}"


def dps_options(hub: Emulator, transport: str, *, websockets: bool = False) -> dict[str, Any]:
    """Options that reach the emulator's DPS (the same listeners as its hub)."""
    return {
        "provisioning_host": hub.hostname,
        "id_scope": hub.dps.id_scope,
        "port": hub.websocket_port if websockets else hub.port,
        "websockets": websockets,
        "ssl_context": hub.client_ssl_context(),
        "transport": transport,
    }


def write_pair(directory: Path, name: str, certificate_pem: bytes, key_pem: bytes) -> aioiothub.X509Credential:
    """Write a certificate and key as PEM files and load them as a credential."""
    certificate_file = directory / f"{name}.cert.pem"
    key_file = directory / f"{name}.key.pem"
    certificate_file.write_bytes(certificate_pem)
    key_file.write_bytes(key_pem)
    return aioiothub.X509Credential(certificate_file, key_file)


# A rogue DPS answers each request with what the test's function returns: publishes to send back
# (topic, body), or None to close the connection at once.
Answer = Callable[[str, bytes], list[tuple[str, bytes]] | None]


@dataclass
class RogueDps:
    """Where a rogue DPS listens, the context that trusts it, and what it received."""

    port: int
    ssl_context: Any
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    closed: anyio.Event = field(default_factory=anyio.Event)


@contextlib.asynccontextmanager
async def rogue_dps(answer: Answer) -> AsyncIterator[RogueDps]:
    """An MQTT server that accepts any DPS client and answers requests as ``answer`` says."""
    authority = CertificateAuthority.generate()
    certificate_pem, key_pem = authority.issue_server_certificate(["localhost", "127.0.0.1"])
    server: RogueDps | None = None

    async def handle(stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        assert server is not None
        codec = MqttServerCodec()
        try:
            while True:
                out = bytearray()
                for packet in codec.feed(await stream.receive()):
                    if isinstance(packet, Connect):
                        out += encode_connack(False, 0)
                    elif isinstance(packet, Subscribe):
                        out += encode_suback(packet.packet_id, [1] * len(packet.filters))
                    elif isinstance(packet, Unsubscribe):
                        out += encode_unsuback(packet.packet_id)
                    elif isinstance(packet, PingReq):
                        out += encode_pingresp()
                    elif isinstance(packet, Disconnect):
                        return
                    elif isinstance(packet, Publish):
                        server.requests.append((packet.topic, packet.payload))
                        if packet.packet_id is not None:
                            out += encode_puback(packet.packet_id)
                        answers = answer(packet.topic, packet.payload)
                        if answers is None:
                            await stream.send(bytes(out))
                            return
                        for topic, body in answers:
                            out += encode_publish(topic, body, 0)
                if out:
                    await stream.send(bytes(out))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        finally:
            server.closed.set()

    async with anyio.create_task_group() as task_group:
        port = await task_group.start(
            lambda task_status: serve_tls(
                handle,
                host="127.0.0.1",
                port=0,
                ssl_context=server_ssl_context(certificate_pem, key_pem),
                task_status=task_status,
            )
        )
        server = RogueDps(port=port, ssl_context=client_ssl_context(authority.certificate_pem))
        yield server
        task_group.cancel_scope.cancel()


def rogue_client(server: RogueDps, transport: str, **options: Any) -> aioiothub.ProvisioningClient:
    """A symmetric-key provisioning client for a rogue DPS."""
    return aioiothub.ProvisioningClient.from_symmetric_key(
        provisioning_host="localhost",
        id_scope="0ne00000000",
        registration_id=options.pop("registration_id", "rogue-device"),
        symmetric_key="NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=",
        port=server.port,
        ssl_context=server.ssl_context,
        transport=transport,
        **options,
    )
